package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2/registry/remote"
)

func TestBadInput(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "w.bin"), "weights", 0o644)

	t.Run("missing path", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		e.fails([]string{"nosuch: no such file or directory"}, "push", reg.Addr+"/team/x:1.0.0", src, "nosuch")
		e.fails([]string{"not found"}, "inspect", reg.Addr+"/team/x:1.0.0")
	})
	t.Run("malformed reference", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		r := e.fails([]string{`invalid reference "not a ref"`, "REGISTRY/REPOSITORY[:TAG|@DIGEST]"}, "push", "not a ref", src)
		if r.Code != 2 {
			t.Errorf("usage error exit code %d, want 2", r.Code)
		}
		e.fails([]string{`invalid reference "localhost:5000/Team/X:1"`}, "pull", "localhost:5000/Team/X:1", "-o", "out")
	})
	t.Run("stage name as version", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		e.fails([]string{`"production" is a stage name`}, "push", reg.Addr+"/team/x:production", src)
	})
	t.Run("bad metric", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		e.fails([]string{"a metric must be a finite number"}, "push", reg.Addr+"/team/x:1.0.0", src, "--metric", "acc=high")
		e.fails([]string{"expected KEY=VALUE"}, "push", reg.Addr+"/team/x:1.0.0", src, "--param", "nokey")
	})
	t.Run("unreachable registry", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		e.fails([]string{"cannot reach the registry", "connection refused"}, "push", dead+"/team/x:1.0.0", src)
		e.fails([]string{"cannot reach the registry"}, "pull", dead+"/team/x:1.0.0", "-o", filepath.Join(e.dir, "never"))
		noLeftovers(t, filepath.Join(e.dir, "never"))
	})
	t.Run("destination not empty", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		e.ok("push", reg.Addr+"/team/x:1.0.0", src)
		e.fails([]string{"exists and is not empty"}, "pull", reg.Addr+"/team/x:1.0.0", "-o", src)
		if b, _ := os.ReadFile(filepath.Join(src, "w.bin")); string(b) != "weights" {
			t.Errorf("existing file touched")
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		e := &env{t: t, home: e.home, dir: e.dir}
		e.fails([]string{"--output \"yaml\": expected text or json"}, "list", reg.Addr+"/team/x", "--output", "yaml")
		e.fails([]string{"-o DIR is required"}, "pull", reg.Addr+"/team/x:1.0.0")
		e.fails([]string{"--created"}, "push", reg.Addr+"/team/x:1.0.9", src, "--created", "yesterday")
		e.fails([]string{"--layer-type"}, "push", reg.Addr+"/team/x:1.0.9", src, "--layer-type", "*.bin=bogus")
	})
}

// A blob corrupted on the registry's disk fails the pull on its digest and
// leaves nothing at the destination.
func TestCorruptBlobFailsPull(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 2<<20, 7)
	writeFile(t, filepath.Join(src, "config.json"), "{}", 0o644)
	ref := reg.Addr + "/team/corrupt:1.0.0"
	e.ok("push", ref, src)

	in := e.ok("inspect", ref, "--output", "json").Stdout
	var v struct {
		Version struct {
			Files []struct {
				Path       string
				Descriptor ocispec.Descriptor
			}
		}
	}
	if err := json.Unmarshal([]byte(in), &v); err != nil {
		t.Fatal(err)
	}
	var d digest.Digest
	for _, f := range v.Version.Files {
		if f.Path == "model.safetensors" {
			d = f.Descriptor.Digest
		}
	}
	blob := filepath.Join(reg.Data, "docker", "registry", "v2", "blobs", "sha256", d.Encoded()[:2], d.Encoded(), "data")
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatalf("blob not where distribution keeps it: %v", err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(e.dir, "out")
	e.fails([]string{"model.safetensors", d.String(), "failed digest verification"}, "pull", ref, "-o", out)
	noLeftovers(t, out)
}

// File paths come from annotations anyone with push rights writes: a path
// that leaves the destination is refused by modelreg serve at the door, and
// by the client before anything is written (tested on plain distribution,
// which stores such a manifest).
func TestPathTraversalRefused(t *testing.T) {
	served := startServer(t)
	reg := startPlainRegistry(t)
	e := newEnv(t)
	for _, evil := range []string{"../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"} {
		t.Run(evil, func(t *testing.T) {
			tagName := "1.0." + string(rune('0'+len(evil)%10))
			if err := tryPushRawManifest(t, served.Addr, "team/evil", tagName, evil); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), evil) {
				t.Errorf("modelreg serve took a manifest with file path %q: %v", evil, err)
			}
			ref := pushRawManifest(t, reg.Addr, "team/evil", tagName, evil)
			out := filepath.Join(e.dir, "sub", "out")
			os.MkdirAll(filepath.Dir(out), 0o755)
			e.fails([]string{evil}, "pull", ref, "-o", out)
			noLeftovers(t, out)
			if _, err := os.Stat(filepath.Join(e.dir, "evil.txt")); err == nil {
				t.Fatalf("pull wrote outside its destination")
			}
			if _, err := os.Stat("/tmp/evil.txt"); err == nil {
				t.Fatalf("pull wrote /tmp/evil.txt")
			}
		})
	}
}

// pushRawManifest writes, with oras-go, a model manifest whose only layer
// claims file path p, the way a hostile producer could.
func pushRawManifest(t *testing.T, addr, repoName, tag, p string) string {
	t.Helper()
	if err := tryPushRawManifest(t, addr, repoName, tag, p); err != nil {
		t.Fatal(err)
	}
	return addr + "/" + repoName + ":" + tag
}

func tryPushRawManifest(t *testing.T, addr, repoName, tag, p string) error {
	t.Helper()
	ctx := context.Background()
	repo, err := remote.NewRepository(addr + "/" + repoName)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	content := []byte("owned")
	layer := ocispec.Descriptor{MediaType: mediatypes.Layer(mediatypes.LayerWeight, mediatypes.EncodingRaw), Digest: digest.FromBytes(content), Size: int64(len(content)),
		Annotations: map[string]string{mediatypes.AnnotationFilepath: p, mediatypes.AnnotationTitle: p}}
	cfg := []byte("{}")
	cdesc := ocispec.Descriptor{MediaType: mediatypes.ModelConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	for _, blob := range []struct {
		d ocispec.Descriptor
		b []byte
	}{{layer, content}, {cdesc, cfg}} {
		if err := repo.Push(ctx, blob.d, bytes.NewReader(blob.b)); err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: mediatypes.ArtifactTypeModel, Config: cdesc, Layers: []ocispec.Descriptor{layer}})
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	return repo.PushReference(ctx, mdesc, bytes.NewReader(m), tag)
}

// With --htpasswd, wrong credentials are refused with a message that says
// how to log in; `modelreg login` and `oras login` both store working ones.
func TestCredentials(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, htpasswd, "alice:"+string(hash)+"\n", 0o600)
	reg := startServer(t, "--htpasswd", htpasswd)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "w.bin"), "weights", 0o644)
	ref := reg.Addr + "/team/secure:1.0.0"

	e.fails([]string{"requires authentication", "modelreg login " + reg.Addr}, "push", ref, src)
	r := e.exec("", []string{"MODELREG_USERNAME=alice", "MODELREG_PASSWORD=wrong"}, modelregBin, "push", ref, src)
	if r.Code == 0 || !strings.Contains(r.Stderr, "credentials rejected") {
		t.Errorf("wrong password: exit %d, stderr %s", r.Code, r.Stderr)
	}
	r = e.exec("wrong\n", nil, modelregBin, "login", reg.Addr, "-u", "alice", "--password-stdin")
	if r.Code == 0 || !strings.Contains(r.Stderr, "401") {
		t.Errorf("login with a wrong password: exit %d, stderr %s", r.Code, r.Stderr)
	}
	r = e.exec("s3cret\n", nil, modelregBin, "login", reg.Addr, "-u", "alice", "--password-stdin")
	if r.Code != 0 {
		t.Fatalf("login: %s", r.Stderr)
	}
	e.ok("push", ref, src)
	// The same credential store serves oras.
	e.oras("pull", ref, "-o", filepath.Join(e.dir, "oras-out"))
	e.ok("logout", reg.Addr)
	e.fails([]string{"modelreg login"}, "inspect", ref)

	// Credentials stored by `oras login` are enough for modelreg.
	e2 := newEnv(t)
	e2.exec("s3cret\n", nil, orasBin, "login", reg.Addr, "-u", "alice", "--password-stdin", "--plain-http")
	e2.ok("inspect", ref)
}

// flaky answers 503 to the first try of every blob upload and download and
// resets the connection of the first manifest fetch: push and pull must
// retry their way through.
type flaky struct {
	mu    sync.Mutex
	seen  map[string]bool
	proxy *httputil.ReverseProxy
	fails int
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.Path
	if d := r.URL.Query().Get("digest"); d != "" {
		key = r.Method + " upload " + d // each retry opens a new upload session
	}
	inject := (r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")) ||
		(r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:"))
	f.mu.Lock()
	first := !f.seen[key]
	f.seen[key] = true
	if inject && first {
		f.fails++
	}
	f.mu.Unlock()
	if inject && first {
		if r.Method == http.MethodGet {
			f.cutShort(w, r)
			return
		}
		http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}`, http.StatusServiceUnavailable)
		return
	}
	f.proxy.ServeHTTP(w, r)
}

// cutShort sends the real response's headers and half its body, then drops
// the connection: what a reset mid-download looks like to a client.
func (f *flaky) cutShort(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	f.proxy.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	hj, _ := w.(http.Hijacker)
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n", rec.Code, http.StatusText(rec.Code), len(body))
	for _, k := range []string{"Content-Type", "Docker-Content-Digest"} {
		fmt.Fprintf(buf, "%s: %s\r\n", k, rec.Header().Get(k))
	}
	buf.WriteString("\r\n")
	buf.Write(body[:len(body)/2])
	buf.Flush()
}

func TestRetriesThroughFailures(t *testing.T) {
	reg := startServer(t)
	target, _ := url.Parse("http://" + reg.Addr)
	f := &flaky{seen: map[string]bool{}, proxy: httputil.NewSingleHostReverseProxy(target)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "a.safetensors"), 3<<20, 8)
	writeRandom(t, filepath.Join(src, "b.safetensors"), 1<<20, 9)
	ref := ln.Addr().String() + "/team/flaky:1.0.0"
	push := decode[transfer.PushResult](t, e.ok("push", ref, src, "--output", "json").Stdout)
	out := filepath.Join(e.dir, "out")
	pull := decode[transfer.PullResult](t, e.ok("pull", ref, "-o", out, "--output", "json").Stdout)
	if pull.Digest != push.Digest {
		t.Errorf("digest changed through the proxy")
	}
	sameTree(t, tree(t, src), tree(t, out))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails < 4 {
		t.Errorf("only %d failures were injected; the test did not exercise retries", f.fails)
	}
}

// With --htpasswd every route needs credentials, the extension's included;
// with --anonymous-read too, reads are open and writes are not.
func TestAuthOnEveryRoute(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, htpasswd, "alice:"+string(hash)+"\n", 0o600)
	d := "sha256:" + strings.Repeat("a", 64)
	routes := []struct {
		method, path string
		write        bool
	}{
		{"GET", "/v2/", false},
		{"GET", "/v2/_catalog", false},
		{"GET", "/v2/team/m/tags/list", false},
		{"GET", "/v2/team/m/manifests/1.0.0", false},
		{"HEAD", "/v2/team/m/blobs/" + d, false},
		{"GET", "/v2/team/m/referrers/" + d, false},
		{"GET", "/v2/_oci/ext/discover", false},
		{"POST", "/v2/team/m/blobs/uploads/", true},
		{"PUT", "/v2/team/m/manifests/1.0.0", true},
		{"DELETE", "/v2/team/m/manifests/" + d, true},
	}
	call := func(addr, method, path string, auth bool) *http.Response {
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader("{}"))
		if auth {
			req.SetBasicAuth("alice", "s3cret")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	strict := startServer(t, "--htpasswd", htpasswd)
	open := startServer(t, "--htpasswd", htpasswd, "--anonymous-read")
	for _, rt := range routes {
		resp := call(strict.Addr, rt.method, rt.path, false)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="modelreg"` {
			t.Errorf("%s %s without credentials: %d %q", rt.method, rt.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if resp := call(strict.Addr, rt.method, rt.path, true); resp.StatusCode == http.StatusUnauthorized {
			t.Errorf("%s %s with credentials: 401", rt.method, rt.path)
		}
		resp = call(open.Addr, rt.method, rt.path, false)
		if rt.write != (resp.StatusCode == http.StatusUnauthorized) {
			t.Errorf("anonymous-read %s %s: %d", rt.method, rt.path, resp.StatusCode)
		}
	}

	// The real cosign CLI signs with the credentials modelreg login stored.
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "w.bin"), "weights", 0o644)
	if r := e.exec("s3cret\n", nil, modelregBin, "login", strict.Addr, "-u", "alice", "--password-stdin"); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	ref := strict.Addr + "/team/m:1.0.0"
	digest := strings.TrimSpace(e.ok("push", ref, src).Stdout)
	e.ok("keygen", "--output-key-prefix", "alice")
	e.cosign(cosign3Bin, nil, "sign", "--key", "alice.key", "--tlog-upload=false", "--use-signing-config=false", "-y", strict.Addr+"/team/m@"+digest)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), "version: 1\nkeys:\n  alice: alice.pub\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n", 0o644)
	e.ok("promote", ref, "--to", "production", "--policy", "policy.yaml")
}
