package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// partsClient speaks the uploads-in-parts protocol by hand, as a client in
// another language would from docs/api.md.
type partsClient struct {
	t    *testing.T
	base string // http://ADDR
}

func (c partsClient) do(method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (c partsClient) create(repo string, size, part int64) (string, transfer.PartsUpload) {
	c.t.Helper()
	body, _ := json.Marshal(transfer.PartsRequest{Size: size, PartSize: part})
	resp, b := c.do(http.MethodPost, "/v2/_modelreg/v1/models/"+repo+"/uploads", body)
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var up transfer.PartsUpload
	if err := json.Unmarshal(b, &up); err != nil {
		c.t.Fatal(err)
	}
	return resp.Header.Get("Location"), up
}

func (c partsClient) status(loc string) transfer.PartsUpload {
	c.t.Helper()
	resp, b := c.do(http.MethodGet, loc, nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("status: %d %s", resp.StatusCode, b)
	}
	var up transfer.PartsUpload
	json.Unmarshal(b, &up)
	return up
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Parts sent at once and out of order make the blob; the scratch copy is
// gone afterwards, and the blob is served by the OCI API with its digest.
func TestUploadInParts(t *testing.T) {
	dir := t.TempDir()
	addr, stop := run(t, dir, false)
	defer stop()
	c := partsClient{t, "http://" + addr}
	const part = 1 << 20
	blob := randomBytes(t, 5*part+12345)
	loc, up := c.create("team/m", int64(len(blob)), part)
	if up.Parts != 6 || len(up.Held) != 6 {
		t.Fatalf("upload: %+v", up)
	}
	var wg sync.WaitGroup
	for _, n := range []int{5, 3, 0, 4, 1, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := min((n+1)*part, len(blob))
			if resp, b := c.do(http.MethodPut, fmt.Sprintf("%s/parts/%d", loc, n), blob[n*part:end]); resp.StatusCode != http.StatusNoContent {
				t.Errorf("part %d: %d %s", n, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	d := digest.FromBytes(blob)
	resp, b := c.do(http.MethodPut, loc+"?digest="+d.String(), nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("complete: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	got, err := repo(t, addr, "team/m").Fetch(context.Background(), ocispec.Descriptor{Digest: d, Size: int64(len(blob))})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(got)
	got.Close()
	if !bytes.Equal(all, blob) {
		t.Fatal("the blob served is not the bytes uploaded in parts")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "modelreg", "uploads")); len(ents) != 0 {
		t.Errorf("scratch left behind after completion: %d entries", len(ents))
	}
	// A completion repeated after success finds no upload.
	if resp, _ := c.do(http.MethodPut, loc+"?digest="+d.String(), nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("completing twice: %d", resp.StatusCode)
	}
}

// What a client can get wrong, each refused with the problem named and
// nothing stored under a wrong name.
func TestUploadInPartsRefusals(t *testing.T) {
	dir := t.TempDir()
	addr, stop := run(t, dir, false)
	defer stop()
	c := partsClient{t, "http://" + addr}
	const part = 1 << 20
	blob := randomBytes(t, 2*part+7)
	for _, tc := range []struct{ body, want string }{
		{`{"size": 0}`, "SIZE_INVALID"},
		{`{"size": 100, "partSize": 10}`, "SIZE_INVALID"},
		{`{"size": 1099511627776, "partSize": 1048576}`, "more than 10000 parts"},
		{`size=3`, "must be JSON"},
	} {
		resp, b := c.do(http.MethodPost, "/v2/_modelreg/v1/models/team/m/uploads", []byte(tc.body))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("create %s: %d %s, want 400 naming %q", tc.body, resp.StatusCode, b, tc.want)
		}
	}
	loc, _ := c.create("team/m", int64(len(blob)), part)
	// A part of the wrong length, a part past the end.
	if resp, b := c.do(http.MethodPut, loc+"/parts/0", blob[:10]); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "Content-Length must be 1048576") {
		t.Errorf("short part: %d %s", resp.StatusCode, b)
	}
	if resp, _ := c.do(http.MethodPut, loc+"/parts/3", blob[:7]); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("part past the end: %d", resp.StatusCode)
	}
	// Completing with parts missing names them.
	c.do(http.MethodPut, loc+"/parts/1", blob[part:2*part])
	resp, b := c.do(http.MethodPut, loc+"?digest="+digest.FromBytes(blob).String(), nil)
	var e struct {
		Errors []struct {
			Code   string
			Detail transfer.PartsMissing
		}
	}
	json.Unmarshal(b, &e)
	if resp.StatusCode != http.StatusBadRequest || len(e.Errors) != 1 || fmt.Sprint(e.Errors[0].Detail.Missing) != "[0 2]" {
		t.Errorf("completion with parts missing: %d %s", resp.StatusCode, b)
	}
	// A continuation from a byte the server does not hold.
	if resp, b := c.do(http.MethodPut, loc+"/parts/0", blob[5:part], "Content-Range", fmt.Sprintf("5-%d", part-1)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || !strings.Contains(string(b), "holds 0 bytes") {
		t.Errorf("continuation past what is held: %d %s", resp.StatusCode, b)
	}
	// Parts that make another blob than the digest named: refused, discarded.
	c.do(http.MethodPut, loc+"/parts/0", blob[:part])
	c.do(http.MethodPut, loc+"/parts/2", blob[2*part:])
	wrong := digest.FromString("something else")
	resp, b = c.do(http.MethodPut, loc+"?digest="+wrong.String(), nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "DIGEST_INVALID") {
		t.Errorf("wrong digest: %d %s", resp.StatusCode, b)
	}
	if ok, _ := repo(t, addr, "team/m").Blobs().Exists(context.Background(), ocispec.Descriptor{Digest: wrong, Size: int64(len(blob))}); ok {
		t.Error("a blob was stored under a digest its bytes do not have")
	}
	if resp, _ := c.do(http.MethodGet, loc, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the upload survived a wrong digest: %d", resp.StatusCode)
	}
	// Another repository's upload is not reachable through this one.
	loc2, _ := c.create("team/other", 10, part)
	if resp, _ := c.do(http.MethodGet, strings.Replace(loc2, "team/other", "team/m", 1), nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an upload answered under another repository: %d", resp.StatusCode)
	}
	// Cancelled: gone, and its scratch with it.
	if resp, _ := c.do(http.MethodDelete, loc2, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("cancel: %d", resp.StatusCode)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "modelreg", "uploads")); len(ents) != 0 {
		t.Errorf("scratch left behind: %d entries", len(ents))
	}
}

// A part cut off by a client that died keeps the bytes that arrived; the
// next client continues from there, also after the server restarted.
func TestUploadInPartsResume(t *testing.T) {
	dir := t.TempDir()
	addr, stop := run(t, dir, false)
	c := partsClient{t, "http://" + addr}
	const part = 4 << 20
	blob := randomBytes(t, 2*part)
	loc, _ := c.create("team/m", int64(len(blob)), part)
	c.do(http.MethodPut, loc+"/parts/1", blob[part:])

	// Part 0: announce it whole, send 3 MiB, and die.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT %s/parts/0 HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", loc, addr, part)
	conn.Write(blob[:3<<20])
	conn.Close()
	var held int64
	for range 500 { // the server records the part when its read fails
		if held = c.status(loc).Held[0]; held > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held != 3<<20 {
		t.Fatalf("held of a part cut at 3 MiB: %d", held)
	}
	stop()

	addr, stop = run(t, dir, false)
	defer stop()
	c.base = "http://" + addr
	if up := c.status(loc); up.Held[0] != 3<<20 || up.Held[1] != part {
		t.Fatalf("after a restart the server holds %v", up.Held)
	}
	if resp, b := c.do(http.MethodPut, loc+"/parts/0", blob[3<<20:part], "Content-Range", fmt.Sprintf("%d-%d", 3<<20, part-1)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("continuing part 0: %d %s", resp.StatusCode, b)
	}
	d := digest.FromBytes(blob)
	if resp, b := c.do(http.MethodPut, loc+"?digest="+d.String(), nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("complete after resume: %d %s", resp.StatusCode, b)
	}
}
