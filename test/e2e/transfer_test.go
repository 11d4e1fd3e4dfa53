package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
)

// resumeChunk is the --chunk-size (MiB) of the resume tests: 16 chunks in
// their 256 MiB file.
const resumeChunk = 16

// serveProc is a `modelreg serve` process on a given data directory and
// address, which a test can kill with SIGKILL and start again on the same
// ones (startServer picks a fresh directory and port each time).
type serveProc struct {
	reg  *registry
	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServeAt runs `modelreg serve --data data --addr addr` until it is
// killed or the test ends; addr may be 127.0.0.1:0 the first time.
func startServeAt(t *testing.T, data, addr string, args ...string) *serveProc {
	t.Helper()
	var last string
	for attempt := 0; attempt < 20; attempt++ { // the port may still be held for a moment after a kill
		p := &serveProc{done: make(chan struct{}), logs: &lockedBuffer{}}
		p.cmd = exec.Command(modelregBin, append([]string{"serve", "--addr", addr, "--data", data, "--log-format", "json"}, args...)...)
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stderr, err := p.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		listening := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				var rec struct{ Msg, Addr string }
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "registry listening" {
					listening <- rec.Addr
				}
				p.logs.WriteString(sc.Text() + "\n")
			}
			p.cmd.Wait()
			close(p.done)
		}()
		select {
		case a := <-listening:
			p.reg = &registry{Addr: a, Data: data}
			t.Cleanup(p.stop)
			return p
		case <-p.done:
			last = p.logs.String()
			time.Sleep(250 * time.Millisecond)
		case <-time.After(30 * time.Second):
			p.kill()
			t.Fatalf("modelreg serve did not start; logs:\n%s", p.logs.String())
		}
	}
	t.Fatalf("modelreg serve --addr %s did not start; last logs:\n%s", addr, last)
	return nil
}

// kill ends the server with SIGKILL, as a crash or the OOM killer would.
func (p *serveProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *serveProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

// startPush runs `modelreg push` as its own process, to be killed.
func startPush(t *testing.T, e *env, args ...string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	cmd := exec.Command(modelregBin, append([]string{"push"}, args...)...)
	cmd.Dir = e.dir
	cmd.Env = e.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	return cmd, done
}

// heldBytes is what the registry holds of the upload in progress to repo:
// the size of its data file in distribution's storage.
func heldBytes(data, repo string) int64 {
	files, _ := filepath.Glob(filepath.Join(data, "docker", "registry", "v2", "repositories", repo, "_uploads", "*", "data"))
	var n int64
	for _, f := range files {
		if info, err := os.Stat(f); err == nil {
			n = max(n, info.Size())
		}
	}
	return n
}

// waitHeld polls until the registry holds at least n bytes of the upload,
// failing if the push ends first.
func waitHeld(t *testing.T, data, repo string, n int64, pushDone chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for heldBytes(data, repo) < n {
		select {
		case <-pushDone:
			t.Fatalf("the push ended before the registry held %d bytes (it holds %d)", n, heldBytes(data, repo))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry holds %d bytes after 2 minutes, waiting for %d", heldBytes(data, repo), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// settledHeld waits until the upload's size has stopped changing (the
// request the kill cut short is done writing) and returns it.
func settledHeld(data, repo string) int64 {
	n := heldBytes(data, repo)
	for stable := 0; stable < 10; {
		time.Sleep(50 * time.Millisecond)
		if m := heldBytes(data, repo); m != n {
			n, stable = m, 0
		} else {
			stable++
		}
	}
	return n
}

// checkMidChunk fails unless the kill left the registry holding part of a
// chunk: the case where the client's saved offset (always at a chunk's
// end) is behind the registry's, which resuming must handle.
func checkMidChunk(t *testing.T, held, size int64) {
	t.Helper()
	if held%(resumeChunk<<20) == 0 || held >= size {
		t.Fatalf("the kill left %d of %d bytes, at a chunk boundary: not the case under test; run again", held, size)
	}
}

// checkResumed checks the second push's report and pulls the version back.
func checkResumed(t *testing.T, e *env, addr, repo string, res transfer.PushResult, held, size int64, sum string) {
	t.Helper()
	t.Logf("the registry held %d of %d bytes (%.1f%%) after the kill; the second push sent %d bytes (%.1f%% of the file)",
		held, size, 100*float64(held)/float64(size), res.Uploaded, 100*float64(res.Uploaded)/float64(size))
	if res.Uploaded > size*6/10 {
		t.Errorf("the second push sent %d of %d bytes (more than 60%%): it did not resume", res.Uploaded, size)
	}
	if res.Uploaded > size-held+4096 { // the config blob is small
		t.Errorf("the second push sent %d bytes, more than the %d the registry lacked (and the config): it resumed from its own offset, not the registry's", res.Uploaded, size-held)
	}
	if res.Uploaded < size/4 {
		t.Errorf("the second push sent only %d bytes: did the first run finish?", res.Uploaded)
	}
	out := filepath.Join(e.dir, "out-"+strings.ReplaceAll(repo, "/", "-"))
	e.ok("pull", addr+"/"+repo+":1.0.0", "-o", out)
	if got := tree(t, out)["model.safetensors"]; !strings.HasSuffix(got, sum) {
		t.Errorf("resumed upload pulled back as %s, want %s", got, sum)
	}
}

// A push killed with SIGKILL half-way through a 256 MiB upload, in the
// middle of a chunk, resumes from what the registry holds: the second run
// sends at most 60% of the file, and the result is exact. The registry
// holds part of the chunk in flight, past the offset the client saved.
func TestResumeAfterClientKill(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	const size = 256 << 20
	const repo = "team/resume"
	src := filepath.Join(e.dir, "m")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), size, 11)
	ref := reg.Addr + "/" + repo + ":1.0.0"
	chunk := fmt.Sprint(resumeChunk)

	push, done := startPush(t, e, ref, src, "--chunk-size", chunk)
	// 3 MiB into the chunk after the half: the kill lands mid-chunk.
	waitHeld(t, reg.Data, repo, size/2+3<<20, done)
	push.Process.Signal(syscall.SIGKILL)
	<-done
	held := settledHeld(reg.Data, repo)
	checkMidChunk(t, held, size)

	res := decode[transfer.PushResult](t, e.ok("push", ref, src, "--chunk-size", chunk, "--output", "json").Stdout)
	checkResumed(t, e, reg.Addr, repo, res, held, size, sum)
}

// The registry killed with SIGKILL half-way through an upload and started
// again on the same data directory and port: the next push resumes (at
// most 60% sent) and the result is exact. The upload's state survives in
// the data directory, and so does the secret its upload URLs are signed
// with.
func TestResumeAfterServerKill(t *testing.T) {
	data := t.TempDir()
	srv := startServeAt(t, data, "127.0.0.1:0")
	addr := srv.reg.Addr
	e := newEnv(t)
	const size = 256 << 20
	const repo = "team/crash"
	src := filepath.Join(e.dir, "m")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), size, 12)
	ref := addr + "/" + repo + ":1.0.0"
	chunk := fmt.Sprint(resumeChunk)

	// Another client's upload, which will continue with the URL it holds
	// (no GET first): valid after the restart only if the secret that
	// signs its _state is the same.
	other := rawUpload(t, addr, "team/other", []byte("before the crash, "))

	push, done := startPush(t, e, ref, src, "--chunk-size", chunk)
	waitHeld(t, data, repo, size/2+3<<20, done)
	srv.kill()
	// The push retries, then gives up while the registry is down.
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("the push did not give up within 90 s of the registry's death")
	}
	if push.ProcessState.Success() {
		t.Fatal("the push succeeded with its registry killed half-way")
	}
	held := settledHeld(data, repo)
	checkMidChunk(t, held, size)

	again := startServeAt(t, data, addr)
	res := decode[transfer.PushResult](t, e.ok("push", ref, src, "--chunk-size", chunk, "--output", "json").Stdout)
	checkResumed(t, e, addr, repo, res, held, size, sum)

	other.finish(t, []byte("after the restart"))
	secretFile := filepath.Join(data, "modelreg", "http-secret")
	info, err := os.Stat(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %o, want 0600", secretFile, info.Mode().Perm())
	}
	secret, _ := os.ReadFile(secretFile)
	if s := strings.TrimSpace(string(secret)); s == "" || strings.Contains(srv.logs.String()+again.logs.String(), s) {
		t.Errorf("the upload secret is empty or appears in the server's logs")
	}
}

// rawStream is an upload driven by hand, with the URL the registry issued.
type rawStream struct {
	addr, repo string
	loc        string
	data       []byte
}

// rawUpload opens an upload and sends a first chunk with plain HTTP.
func rawUpload(t *testing.T, addr, repo string, first []byte) *rawStream {
	t.Helper()
	r := &rawStream{addr: addr, repo: repo}
	resp := rawDo(t, http.MethodPost, "http://"+addr+"/v2/"+repo+"/blobs/uploads/", nil, http.StatusAccepted)
	r.loc = resp.Header.Get("Location")
	r.patch(t, first)
	return r
}

func (r *rawStream) url() string {
	if strings.HasPrefix(r.loc, "http") {
		return r.loc
	}
	return "http://" + r.addr + r.loc
}

func (r *rawStream) patch(t *testing.T, b []byte) {
	t.Helper()
	resp := rawDo(t, http.MethodPatch, r.url(), b, http.StatusAccepted,
		"Content-Range", fmt.Sprintf("%d-%d", len(r.data), len(r.data)+len(b)-1), "Content-Type", "application/octet-stream")
	r.loc = resp.Header.Get("Location")
	r.data = append(r.data, b...)
}

// finish sends the last chunk with the URL it holds and commits the blob.
func (r *rawStream) finish(t *testing.T, last []byte) {
	t.Helper()
	r.patch(t, last)
	u, err := url.Parse(r.url())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", digest.FromBytes(r.data).String())
	u.RawQuery = q.Encode()
	rawDo(t, http.MethodPut, u.String(), nil, http.StatusCreated)
}

func rawDo(t *testing.T, method, u string, body []byte, want int, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s, want %d: %s", method, u, resp.Status, want, b)
	}
	return resp
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
