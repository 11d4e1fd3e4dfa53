package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/transfer"
)

// stall forwards to a registry but, once armed, holds every PATCH that
// would take the upload past limit bytes: what a dead network looks like
// half-way through a large upload.
type stall struct {
	proxy   *httputil.ReverseProxy
	limit   int64
	sent    atomic.Int64
	armed   atomic.Bool
	release chan struct{}
	once    sync.Once
}

func (s *stall) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPatch && s.armed.Load() && s.sent.Add(r.ContentLength) > s.limit {
		<-s.release // never answered while armed
		http.Error(w, "stalled", http.StatusServiceUnavailable)
		return
	}
	s.proxy.ServeHTTP(w, r)
}

func startStall(t *testing.T, reg *registry, limit int64) (*stall, string) {
	target, _ := url.Parse("http://" + reg.Addr)
	s := &stall{proxy: httputil.NewSingleHostReverseProxy(target), limit: limit, release: make(chan struct{})}
	s.armed.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s}
	go srv.Serve(ln)
	t.Cleanup(func() { s.once.Do(func() { close(s.release) }); srv.Close() })
	return s, ln.Addr().String()
}

// An upload killed half-way resumes from the last acknowledged chunk: the
// second run sends at most 60% of the file, and the result is exact.
func TestResumeInterruptedUpload(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	const size = 256 << 20
	src := filepath.Join(e.dir, "m")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), size, 11)
	st, addr := startStall(t, reg, size/2)
	ref := addr + "/team/resume:1.0.0"

	cmd := exec.Command(modelregBin, "push", ref, src, "--chunk-size", "16")
	cmd.Env = e.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for st.sent.Load() <= size/2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the stalled PATCH is in flight
	cmd.Process.Kill()
	cmd.Wait()
	st.armed.Store(false)
	st.once.Do(func() { close(st.release) })

	res := decode[transfer.PushResult](t, e.ok("push", ref, src, "--chunk-size", "16", "--output", "json").Stdout)
	if res.Uploaded > size*6/10 {
		t.Errorf("the resumed push sent %d of %d bytes (more than 60%%)", res.Uploaded, size)
	}
	if res.Uploaded < size/4 {
		t.Errorf("the resumed push sent only %d bytes: did the first run finish?", res.Uploaded)
	}
	out := filepath.Join(e.dir, "out")
	e.ok("pull", reg.Addr+"/team/resume:1.0.0", "-o", out)
	if got := tree(t, out)["model.safetensors"]; !strings.HasSuffix(got, sum) {
		t.Errorf("resumed upload pulled back as %s, want %s", got, sum)
	}
}

// A new version with one of 24 files changed sends only that file; a
// fine-tune in another repository mounts the base model's blobs.
func TestRepushAndMount(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	for i := range 23 {
		writeRandom(t, filepath.Join(src, "shards", "part-"+string(rune('a'+i))+".bin"), 1<<20, uint64(20+i))
	}
	writeRandom(t, filepath.Join(src, "head.safetensors"), 3<<20, 99)
	first := decode[transfer.PushResult](t, e.ok("push", reg.Addr+"/team/m:1.0.0", src, "--output", "json").Stdout)
	if first.Uploaded < 26<<20 {
		t.Fatalf("first push sent %d bytes", first.Uploaded)
	}
	writeRandom(t, filepath.Join(src, "head.safetensors"), 3<<20, 100)
	second := decode[transfer.PushResult](t, e.ok("push", reg.Addr+"/team/m:1.1.0", src, "--output", "json").Stdout)
	if second.Uploaded < 3<<20 || second.Uploaded > 3<<20+4096 {
		t.Errorf("re-push with one 3 MiB file changed sent %d bytes", second.Uploaded)
	}

	// The fine-tune ships the base's shards unchanged plus a new head.
	tuned := filepath.Join(e.dir, "tuned")
	os.MkdirAll(filepath.Join(tuned, "shards"), 0o755)
	entries, _ := os.ReadDir(filepath.Join(src, "shards"))
	for _, en := range entries {
		b, _ := os.ReadFile(filepath.Join(src, "shards", en.Name()))
		os.WriteFile(filepath.Join(tuned, "shards", en.Name()), b, 0o644)
	}
	writeRandom(t, filepath.Join(tuned, "head.safetensors"), 3<<20, 101)
	e2 := newEnv(t) // another machine: no digest cache, mounts come from --base-model
	e2.dir = e.dir
	ft := decode[transfer.PushResult](t, e2.ok("push", reg.Addr+"/team/tuned:1.0.0", tuned, "--base-model", reg.Addr+"/team/m:1.1.0", "--output", "json").Stdout)
	if ft.Mounted != 23<<20 || ft.Uploaded > 3<<20+4096 {
		t.Errorf("fine-tune push: mounted %d, uploaded %d", ft.Mounted, ft.Uploaded)
	}
	// Without --base-model, the digest cache knows where the blobs went.
	ft2 := decode[transfer.PushResult](t, e2.ok("push", reg.Addr+"/team/tuned2:1.0.0", tuned, "--output", "json").Stdout)
	if ft2.Mounted != 26<<20 || ft2.Uploaded > 4096 {
		t.Errorf("push from the cache: mounted %d, uploaded %d", ft2.Mounted, ft2.Uploaded)
	}
	out := filepath.Join(e.dir, "ft-out")
	e.ok("pull", reg.Addr+"/team/tuned2:1.0.0", "-o", out)
	sameTree(t, tree(t, tuned), tree(t, out))
	_ = io.Discard
}
