package transfer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/server"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// serve runs modelreg serve (in process) over a fresh data directory.
func serve(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, server.Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s.Addr()
}

func randomFile(t *testing.T, size int) (string, []byte) {
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// cuttingClient fails every part request after the first `allow` with the
// body half sent, as a client killed mid-upload leaves it.
type cuttingClient struct {
	allow int32
	parts atomic.Int32
}

func (c *cuttingClient) Do(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/parts/") && c.parts.Add(1) > c.allow {
		r.Body = io.NopCloser(io.LimitReader(r.Body, r.ContentLength/2))
		http.DefaultClient.Do(r) // the server keeps the half that arrived
		// Wait until it has recorded it, as a later run would find it.
		loc := r.URL.String()[:strings.Index(r.URL.String(), "/parts/")]
		for range 500 {
			var up transfer.PartsUpload
			if resp, err := http.Get(loc); err == nil {
				json.NewDecoder(resp.Body).Decode(&up)
				resp.Body.Close()
			}
			var held int64
			for _, h := range up.Held {
				held += h
			}
			if held%(1<<20) == 0 && held%(2<<20) != 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil, errors.New("killed")
	}
	return http.DefaultClient.Do(r)
}

func fetchBlob(t *testing.T, addr, repo string, d digest.Digest, size int) []byte {
	r, err := remote.NewRepository(addr + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	rc, err := r.Blobs().Fetch(context.Background(), ocispec.Descriptor{Digest: d, Size: int64(size)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return b
}

// A file sent in parts by the client arrives whole, under its digest,
// whether the client knew the digest or hashed it beside the parts.
func TestPartUploader(t *testing.T) {
	addr := serve(t)
	if !transfer.SupportsParts(context.Background(), http.DefaultClient, "http://"+addr) {
		t.Fatal("modelreg serve's discover document does not offer uploads in parts")
	}
	path, content := randomFile(t, 9<<20+3)
	want := digest.FromBytes(content)
	for _, known := range []digest.Digest{"", want} {
		u := &transfer.PartUploader{Client: http.DefaultClient, Registry: "http://" + addr, Repository: "team/m" + string(known[min(len(known), 7):]),
			Connections: 4, PartSize: 1 << 20}
		d, sent, err := u.Upload(context.Background(), path, known, progress.Discard().Track("", "", 0))
		if err != nil || d != want || sent != int64(len(content)) {
			t.Fatalf("known %q: %s, sent %d, %v", known, d, sent, err)
		}
		if !bytes.Equal(fetchBlob(t, addr, u.Repository, d, len(content)), content) {
			t.Fatal("the blob is not the file")
		}
	}
	// A digest that is not the file's is caught before anything is committed.
	u := &transfer.PartUploader{Client: http.DefaultClient, Registry: "http://" + addr, Repository: "team/x", Connections: 2, PartSize: 1 << 20}
	if _, _, err := u.Upload(context.Background(), path, digest.FromString("other"), progress.Discard().Track("", "", 0)); err == nil || !strings.Contains(err.Error(), "changed while") {
		t.Fatalf("a wrong known digest: %v", err)
	}
}

// An upload killed after three parts (and halfway into the next ones)
// resumes with only what the registry lacks.
func TestPartUploaderResumes(t *testing.T) {
	addr := serve(t)
	path, content := randomFile(t, 16<<20)
	state := t.TempDir()
	cut := &cuttingClient{allow: 3}
	u := &transfer.PartUploader{Client: cut, Registry: "http://" + addr, Repository: "team/m", StateDir: state, Connections: 1, PartSize: 2 << 20}
	if _, _, err := u.Upload(context.Background(), path, "", progress.Discard().Track("", "", 0)); err == nil {
		t.Fatal("the cut upload succeeded")
	}
	u = &transfer.PartUploader{Client: http.DefaultClient, Registry: "http://" + addr, Repository: "team/m", StateDir: state, Connections: 4, PartSize: 2 << 20}
	d, sent, err := u.Upload(context.Background(), path, "", progress.Discard().Track("", "", 0))
	if err != nil || d != digest.FromBytes(content) {
		t.Fatal(d, err)
	}
	// 3 parts whole and 1 MiB of the fourth were held: 16-7 = 9 MiB left.
	if sent != 9<<20 {
		t.Errorf("the resumed upload sent %d bytes, want %d", sent, 9<<20)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("resume state left after success: %d files", len(ents))
	}
	if !bytes.Equal(fetchBlob(t, addr, "team/m", d, len(content)), content) {
		t.Fatal("the resumed blob is not the file")
	}
}

// Push sends large files in parts and small ones the usual way; the
// version pulls back byte for byte.
func TestPushInParts(t *testing.T) {
	addr := serve(t)
	dir := t.TempDir()
	big := make([]byte, 5<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(dir, "model.safetensors"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"a":1}`), 0o644)
	files, err := model.Collect([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := remote.NewRepository(addr + "/team/p")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	var mu sync.Mutex
	var paths []string
	logging := clientFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		return http.DefaultClient.Do(r)
	})
	ref := registry.Reference{Registry: addr, Repository: "team/p", Reference: "1.0.0"}
	opts := transfer.PushOptions{
		Streamer: &transfer.Streamer{Client: logging, Base: "http://" + addr + "/v2/team/p"},
		Parts:    &transfer.PartUploader{Client: logging, Registry: "http://" + addr, Repository: "team/p", Connections: 4, Threshold: 1 << 20, PartSize: 1 << 20},
	}
	res, err := transfer.Push(context.Background(), repo, ref, files, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded != res.Size {
		t.Errorf("uploaded %d of %d bytes", res.Uploaded, res.Size)
	}
	var partPuts, patches int
	for _, p := range paths {
		partPuts += strings.Count(p, "/parts/")
		patches += strings.Count(p, "PATCH ")
	}
	if partPuts != 5 || patches != 1 {
		t.Errorf("%d part PUTs and %d PATCHes; want 5 (the weights) and 1 (the config)", partPuts, patches)
	}
	out := t.TempDir()
	if _, err := transfer.Pull(context.Background(), repo, ref, out, transfer.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "model.safetensors")); !bytes.Equal(got, big) {
		t.Error("the pulled weights are not the pushed ones")
	}
}

type clientFunc func(*http.Request) (*http.Response, error)

func (f clientFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// A killed client's part request that the server is still reading makes
// the next client wait (409 PART_BUSY), then continue from the bytes that
// request left: nothing is sent twice and the blob is exact.
func TestPartUploaderWaitsForABusyPart(t *testing.T) {
	addr := serve(t)
	path, content := randomFile(t, 4<<20)
	state := t.TempDir()
	// Open the upload as the uploader would, and save its state; no part
	// arrives.
	u := &transfer.PartUploader{Registry: "http://" + addr, Repository: "team/m", StateDir: state, Connections: 2, PartSize: 2 << 20,
		Client: clientFunc(func(r *http.Request) (*http.Response, error) {
			if strings.Contains(r.URL.Path, "/parts/") {
				return nil, errors.New("no network")
			}
			return http.DefaultClient.Do(r)
		})}
	if _, _, err := u.Upload(context.Background(), path, "", progress.Discard().Track("", "", 0)); err == nil {
		t.Fatal("an upload without its parts succeeded")
	}
	var loc string
	ents, _ := os.ReadDir(state)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(state, e.Name()))
		var st struct{ Location string }
		json.Unmarshal(b, &st)
		loc = st.Location
	}
	if loc == "" {
		t.Fatal("no saved upload")
	}
	// A lingering request on part 0: half a MiB of 2, connection held open.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT %s/parts/0 HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", loc, addr, 2<<20)
	conn.Write(content[:1<<19])
	go func() { time.Sleep(time.Second); conn.Close() }()
	time.Sleep(100 * time.Millisecond)

	u = &transfer.PartUploader{Client: http.DefaultClient, Registry: "http://" + addr, Repository: "team/m", StateDir: state, Connections: 2, PartSize: 2 << 20}
	start := time.Now()
	d, sent, err := u.Upload(context.Background(), path, "", progress.Discard().Track("", "", 0))
	if err != nil || d != digest.FromBytes(content) {
		t.Fatal(d, err)
	}
	if time.Since(start) < 500*time.Millisecond {
		t.Error("the upload did not wait for the lingering request")
	}
	// The lingering request left half a MiB of part 0.
	if want := int64(4<<20 - 1<<19); sent != want {
		t.Errorf("sent %d bytes, want %d (what the server lacked)", sent, want)
	}
	if !bytes.Equal(fetchBlob(t, addr, "team/m", d, len(content)), content) {
		t.Fatal("the blob is not the file")
	}
}
