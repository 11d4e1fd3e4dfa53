package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/transfer"
)

// countingProxy stands in front of a registry and counts the requests of
// each kind: part PUTs of uploads in parts, PATCHes of streamed uploads.
type countingProxy struct {
	addr           string
	mu             sync.Mutex
	parts, patches int
}

func newCountingProxy(t *testing.T, registryAddr string) *countingProxy {
	target, _ := url.Parse("http://" + registryAddr)
	p := &countingProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host // upload Locations name the proxy, as behind a load balancer
		p.mu.Lock()
		switch {
		case pr.In.Method == http.MethodPut && strings.Contains(pr.In.URL.Path, "/parts/"):
			p.parts++
		case pr.In.Method == http.MethodPatch:
			p.patches++
		}
		p.mu.Unlock()
	}}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *countingProxy) counts() (parts, patches int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	parts, patches = p.parts, p.patches
	p.parts, p.patches = 0, 0
	return
}

// The real CLI sends a 96 MiB file in parts to modelreg serve with
// --connections 4 (8 MiB parts: 12 part PUTs), streams it by default on
// loopback, and falls back to the standard upload on plain distribution,
// which offers no uploads in parts. Every version pulls back exact.
func TestPushInParts(t *testing.T) {
	reg := startServer(t)
	plain := startPlainRegistry(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), 96<<20, 21)
	writeFile(t, filepath.Join(src, "config.json"), `{"layers": 12}`, 0o644)
	for _, c := range []struct {
		name           string
		reg            *registry
		args           []string
		parts, patches int
	}{
		{"parts", reg, []string{"--connections", "4"}, 12, 1},
		{"loopback default streams", reg, nil, 0, 2},
		{"plain distribution", plain, []string{"--connections", "4"}, 0, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newCountingProxy(t, c.reg.Addr)
			ref := p.addr + "/team/parts-" + strings.ReplaceAll(c.name, " ", "-") + ":1.0.0"
			args := append([]string{"push", ref, src, "--no-cache", "--dedupe", "stream", "--output", "json"}, c.args...)
			res := decode[transfer.PushResult](t, e.ok(args...).Stdout)
			parts, patches := p.counts()
			if parts != c.parts || patches != c.patches {
				t.Errorf("%d part PUTs and %d PATCHes; want %d and %d", parts, patches, c.parts, c.patches)
			}
			if res.Uploaded != res.Size {
				t.Errorf("uploaded %d of %d bytes", res.Uploaded, res.Size)
			}
			out := filepath.Join(e.dir, "out-"+c.name)
			e.ok("pull", ref, "-o", out)
			if got := tree(t, out)["model.safetensors"]; !strings.HasSuffix(got, sum) {
				t.Errorf("pulled back as %s, want %s", got, sum)
			}
		})
	}
	if ents, _ := os.ReadDir(filepath.Join(reg.Data, "modelreg", "uploads")); len(ents) != 0 {
		t.Errorf("modelreg serve kept %d uploads in parts after they completed", len(ents))
	}
	e.fails([]string{"--connections"}, "push", reg.Addr+"/team/x:1.0.0", src, "--connections", "-2")
}

// partsHeld is what modelreg serve holds of the uploads in parts in
// progress: the bytes written in their sparse scratch files.
func partsHeld(data string) int64 {
	files, _ := filepath.Glob(filepath.Join(data, "modelreg", "uploads", "*", "data"))
	var n int64
	for _, f := range files {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) == nil {
			n += st.Blocks * 512
		}
	}
	return n
}

// recordedHeld is what the server recorded it holds (state.json), once the
// requests the kill cut short are done.
func recordedHeld(t *testing.T, data string) int64 {
	var n int64
	for stable := 0; stable < 10; {
		time.Sleep(50 * time.Millisecond)
		files, _ := filepath.Glob(filepath.Join(data, "modelreg", "uploads", "*", "state.json"))
		var m int64
		for _, f := range files {
			var st struct{ Held []int64 }
			b, _ := os.ReadFile(f)
			json.Unmarshal(b, &st)
			for _, h := range st.Held {
				m += h
			}
		}
		if m != n {
			n, stable = m, 0
		} else {
			stable++
		}
	}
	return n
}

// A push in parts killed with SIGKILL half-way resumes with what the
// server lacks, down to the byte: parts cut mid-way are continued, not
// sent again.
func TestPartsResumeAfterClientKill(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	const size = 256 << 20
	src := filepath.Join(e.dir, "m")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), size, 12)
	ref := reg.Addr + "/team/parts-resume:1.0.0"

	push, done := startPush(t, e, ref, src, "--connections", "4", "--dedupe", "hash")
	deadline := time.Now().Add(2 * time.Minute)
	for partsHeld(reg.Data) < size/2 {
		select {
		case <-done:
			t.Fatal("the push ended before it was half-way")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("modelreg serve holds %d bytes after 2 minutes", partsHeld(reg.Data))
		}
		time.Sleep(time.Millisecond)
	}
	push.Process.Signal(syscall.SIGKILL)
	<-done
	held := recordedHeld(t, reg.Data)
	res := decode[transfer.PushResult](t, e.ok("push", ref, src, "--connections", "4", "--output", "json").Stdout)
	checkResumed(t, e, reg.Addr, "team/parts-resume", res, held, size, sum)
}
