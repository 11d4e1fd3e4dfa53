package e2e

import (
	"archive/tar"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// `make image`'s steps (build/image.sh on a static build) make an OCI
// image of modelreg serve without a Docker engine: pushed to a modelreg
// serve, its config has the entrypoint, a non-root user and the port; the
// binary exported from it starts and answers /healthz.
func TestShipImage(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir := t.TempDir()
	bin := filepath.Join(dir, "modelreg-linux")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/modelreg")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	reg := startServer(t)
	ref := reg.Addr + "/ops/modelreg:test"
	script := exec.Command(filepath.Join(root, "build", "image.sh"), bin, filepath.Join(dir, "out"), ref)
	script.Env = append(os.Environ(), "CRANE="+craneBin, "VERSION=test", "REGISTRY_BIN="+modelregBin)
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("build/image.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"oci/index.json", "oci/oci-layout", "modelreg.tar", "digest"} {
		if _, err := os.Stat(filepath.Join(dir, "out", f)); err != nil {
			t.Errorf("the build wrote no %s: %v", f, err)
		}
	}
	e := newEnv(t)
	crane := func(args ...string) string {
		t.Helper()
		r := e.exec("", nil, craneBin, args...)
		if r.Code != 0 {
			t.Fatalf("crane %s: %s", strings.Join(args, " "), r.Stderr)
		}
		return r.Stdout
	}
	digest, _ := os.ReadFile(filepath.Join(dir, "out", "digest"))
	if got := strings.TrimSpace(crane("digest", ref)); got != strings.TrimSpace(string(digest)) {
		t.Errorf("pushed %s, the build says %s", got, digest)
	}
	var cfg struct {
		OS, Architecture string
		Config           struct {
			Entrypoint, Cmd []string
			User            string
			ExposedPorts    map[string]any
		}
	}
	if err := json.Unmarshal([]byte(crane("config", ref)), &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/modelreg", "serve"}) || !slices.Equal(c.Cmd, []string{"--addr", ":5000", "--data", "/data"}) {
		t.Errorf("entrypoint %q, cmd %q", c.Entrypoint, c.Cmd)
	}
	if c.User != "65532:65532" || c.ExposedPorts["5000/tcp"] == nil || cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("config: %+v", cfg)
	}
	manifest := crane("manifest", ref)
	if !strings.Contains(manifest, "application/vnd.oci.image.manifest.v1+json") {
		t.Errorf("not an OCI manifest: %s", manifest)
	}

	// The filesystem: the binary (root's), CA certificates, /data the
	// user's own.
	export := exec.Command(craneBin, "export", ref, "-")
	stdout, err := export.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := export.Start(); err != nil {
		t.Fatal(err)
	}
	extracted := filepath.Join(dir, "modelreg-from-image")
	seen := map[string]*tar.Header{}
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = h
		if strings.TrimPrefix(h.Name, "./") == "usr/local/bin/modelreg" {
			f, err := os.OpenFile(extracted, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(f, tr)
			f.Close()
		}
	}
	if err := export.Wait(); err != nil {
		t.Fatal(err)
	}
	if h := seen["usr/local/bin/modelreg"]; h == nil || h.Uid != 0 || h.Mode&0o111 == 0 {
		t.Errorf("binary entry: %+v", h)
	}
	if h := seen["data"]; h == nil || h.Uid != 65532 || h.Gid != 65532 {
		t.Errorf("/data entry: %+v (want owned by 65532)", h)
	}
	if seen["etc/ssl/certs/ca-certificates.crt"] == nil || seen["etc/passwd"] == nil {
		t.Errorf("no CA bundle or passwd in the image: %v", slices.Sorted(func(yield func(string) bool) {
			for k := range seen {
				if !yield(k) {
					return
				}
			}
		}))
	}

	// The binary taken from the image serves.
	srv := exec.Command(extracted, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--log-format", "json")
	logs, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	dec := json.NewDecoder(logs)
	var addr string
	for addr == "" {
		var rec struct{ Msg, Addr string }
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("the image's binary did not start: %v", err)
		}
		if rec.Msg == "registry listening" {
			addr = rec.Addr
		}
	}
	go io.Copy(io.Discard, logs)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz of the image's binary: %s", resp.Status)
	}
}
