package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/transfer"
)

// Two `modelreg serve` replicas on one bucket (replicas: true), sharing
// the upload secret and the server key: a blob upload started on one
// (POST) is continued and completed on the other (PATCH, PUT), which
// needs the shared secret; the uploads in parts, held in one process, are
// not offered; modelreg push through one and pull through the other
// works. (Listing and search across replicas need the shared PostgreSQL
// index: docs/deploy-scale.md.)
func TestS3ReplicasShareUploads(t *testing.T) {
	st := startWeed(t)
	secret := filepath.Join(t.TempDir(), "upload-secret")
	b := make([]byte, 32)
	rand.Read(b)
	writeFile(t, secret, hex.EncodeToString(b)+"\n", 0o600)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cfg := st.config(t, "", "replicas: true\nuploadSecret: "+secret+"\n")

	// A replica without the shared key refuses to start.
	r := newEnv(t).exec("", nil, modelregBin, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--config", cfg)
	if r.Code == 0 || !strings.Contains(r.Stderr, "server-key.pem is missing") {
		t.Fatalf("a replica without the server key: exit %d\n%s", r.Code, r.Stderr)
	}
	replica := func() *registry {
		data := t.TempDir()
		writeFile(t, filepath.Join(data, "modelreg", "server-key.pem"), string(key), 0o600)
		return startServerIn(t, data, "--config", cfg)
	}
	a, bb := replica(), replica()

	content := bytes.Repeat([]byte("replicated "), 100000)
	sum := sha256.Sum256(content)
	d := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := http.Post("http://"+a.Addr+"/v2/team/rep/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(loc, "_state=") {
		t.Fatalf("POST on replica A: %s, Location %q", resp.Status, loc)
	}
	if strings.HasPrefix(loc, "http") {
		loc = loc[strings.Index(loc[len("http://"):], "/")+len("http://"):]
	}
	send := func(method, url string, body []byte, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.ContentLength = int64(len(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp = send(http.MethodPatch, "http://"+bb.Addr+loc, content, map[string]string{"Content-Type": "application/octet-stream", "Content-Range": fmt.Sprintf("0-%d", len(content)-1)})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH on replica B of an upload started on A: %s", resp.Status)
	}
	next := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(next, "?") {
		sep = "&"
	}
	if !strings.HasPrefix(next, "http") {
		next = "http://" + a.Addr + next
	} else {
		next = "http://" + a.Addr + next[strings.Index(next[len("http://"):], "/")+len("http://"):]
	}
	resp = send(http.MethodPut, next+sep+"digest="+d, nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT on replica A after a PATCH on B: %s", resp.Status)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	head, err := noFollow.Head("http://" + bb.Addr + "/v2/team/rep/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("the blob seen from replica B: %s", head.Status)
	}

	// No uploads in parts on replicas; modelreg push uses the OCI upload.
	if transfer.SupportsParts(t.Context(), http.DefaultClient, "http://"+a.Addr) {
		t.Errorf("replica A offers uploads in parts")
	}
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "w.bin"), 70<<20, 11)
	push := decode[transfer.PushResult](t, e.ok("push", a.Addr+"/team/rep:1.0.0", src, "--connections", "4", "--output", "json").Stdout)
	pull := decode[transfer.PullResult](t, e.ok("pull", bb.Addr+"/team/rep:1.0.0", "-o", filepath.Join(e.dir, "out"), "--output", "json").Stdout)
	if pull.Digest != push.Digest {
		t.Errorf("pulled %s from B, pushed %s to A", pull.Digest, push.Digest)
	}
	sameTree(t, tree(t, src), tree(t, filepath.Join(e.dir, "out")))
	if _, err := os.Stat(filepath.Join(a.Data, "modelreg", "http-secret")); err == nil {
		t.Errorf("replica A made a secret of its own")
	}
}
