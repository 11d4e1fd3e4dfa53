package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// rangedSize is the large file of these tests: above the threshold they
// set (1 MiB), odd, so that ranges are not all of one size.
const rangedSize = 3<<20 + 7

// proxy stands between the client and a test registry: it logs the Range
// header of every blob GET and may change requests and answers.
type proxy struct {
	host string
	mu   sync.Mutex
	gets []string // the Range header of each blob GET ("" for none)
	// before may answer a request itself (returning true) or change it.
	before func(w http.ResponseWriter, r *http.Request) bool
	// after may change the registry's answer.
	after func(resp *http.Response)
}

func newProxy(t *testing.T, reg *testRegistry) *proxy {
	t.Helper()
	target, _ := url.Parse("http://" + reg.host)
	p := &proxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			if p.after != nil {
				p.after(resp)
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			p.mu.Lock()
			p.gets = append(p.gets, r.Header.Get("Range"))
			p.mu.Unlock()
		}
		if p.before != nil && p.before(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.host = strings.TrimPrefix(srv.URL, "http://")
	return p
}

func (p *proxy) ranges() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.gets)
}

// rangedModel pushes team/m:1.0.0 to reg, a large file of random bytes and
// a small one, and returns the large file's content and blob path.
func rangedModel(t *testing.T, reg *testRegistry) ([]byte, string) {
	t.Helper()
	big := make([]byte, rangedSize)
	r := rand.New(rand.NewChaCha8([32]byte{7}))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	_, files := writeModel(t, map[string]string{"weights/model.safetensors": string(big), "config.json": `{"layers": 2}`})
	repo, ref := connect(t, reg.host, "team/m:1.0.0")
	if _, err := Push(context.Background(), repo, ref, files, PushOptions{Retry: fastRetry}); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	return big, fmt.Sprintf("/blobs/sha256:%x", sha256.Sum256(big))
}

// rangedPull pulls team/m:1.0.0 from host with a 1 MiB threshold and
// conns ranges, and returns the destination.
func rangedPull(t *testing.T, host string, conns int) (string, error) {
	t.Helper()
	repo, ref := connect(t, host, "team/m:1.0.0")
	out := filepath.Join(t.TempDir(), "out")
	_, err := Pull(context.Background(), repo, ref, out, PullOptions{Retry: fastRetry, RangeConnections: conns, RangeThreshold: 1 << 20})
	return out, err
}

func samePulled(t *testing.T, out string, big []byte) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(out, "weights", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("pulled file differs from the pushed one (%d bytes, want %d)", len(got), len(big))
	}
	info, err := os.Stat(filepath.Join(out, "weights", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o644 {
		t.Errorf("mode %o, want 644", info.Mode().Perm())
	}
	if c, err := os.ReadFile(filepath.Join(out, "config.json")); err != nil || string(c) != `{"layers": 2}` {
		t.Errorf("config.json = %q, %v", c, err)
	}
}

// nothingLeft fails unless out and every temporary directory beside it
// are gone.
func nothingLeft(t *testing.T, out string) {
	t.Helper()
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s exists after a failed pull", out)
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range entries {
		t.Errorf("%s left beside the destination", e.Name())
	}
}

// A large raw layer is fetched as RangeConnections Range requests that
// cover it once; small layers in one request; the bytes are the pushed ones.
func TestRangedPull(t *testing.T) {
	reg := newTestRegistry(t)
	big, blob := rangedModel(t, reg)
	p := newProxy(t, reg)
	out, err := rangedPull(t, p.host, 4)
	if err != nil {
		t.Fatal(err)
	}
	samePulled(t, out, big)
	if got := reg.requests("GET ", blob); len(got) != 4 {
		t.Errorf("%d GETs of the large blob, want 4:\n%s", len(got), strings.Join(reg.requests(), "\n"))
	}
	var want []string
	for _, r := range splitRanges(rangedSize, 4) {
		want = append(want, fmt.Sprintf("bytes=%d-%d", r.start, r.end))
	}
	got := slices.DeleteFunc(p.ranges(), func(s string) bool { return s == "" })
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Range headers %q, want %q", got, want)
	}
	if n := len(p.ranges()) - len(got); n != 2 {
		t.Errorf("%d blob GETs without Range, want 2 (config blob, config.json)", n)
	}

	// One connection, or the default from a registry on loopback (this
	// one): one stream.
	for _, conns := range []int{1, 0} {
		reg.reset()
		out, err = rangedPull(t, p.host, conns)
		if err != nil {
			t.Fatal(err)
		}
		samePulled(t, out, big)
		if got := reg.requests("GET ", blob); len(got) != 1 {
			t.Errorf("RangeConnections %d: %d GETs of the large blob, want 1", conns, len(got))
		}
	}
}

// A registry that ignores Range (answers 200 with the whole blob) is read
// in one stream, from that first answer: one GET, and the pull succeeds.
func TestRangedPullFallsBack(t *testing.T) {
	reg := newTestRegistry(t)
	big, blob := rangedModel(t, reg)
	p := newProxy(t, reg)
	p.before = func(w http.ResponseWriter, r *http.Request) bool {
		r.Header.Del("Range")
		return false
	}
	out, err := rangedPull(t, p.host, 4)
	if err != nil {
		t.Fatal(err)
	}
	samePulled(t, out, big)
	if got := reg.requests("GET ", blob); len(got) != 1 {
		t.Errorf("%d GETs of the large blob, want 1:\n%s", len(got), strings.Join(reg.requests(), "\n"))
	}

	// A 206 without Content-Range: the blob is fetched again, whole.
	reg.reset()
	p.before = nil
	p.after = func(resp *http.Response) { resp.Header.Del("Content-Range") }
	out, err = rangedPull(t, p.host, 4)
	if err != nil {
		t.Fatal(err)
	}
	samePulled(t, out, big)
	if got := reg.requests("GET ", blob); len(got) != 2 {
		t.Errorf("no Content-Range: %d GETs of the large blob, want 2 (the probe, then one stream)", len(got))
	}
}

// flipReader flips the first byte it reads.
type flipReader struct {
	io.ReadCloser
	done bool
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.ReadCloser.Read(b)
	if n > 0 && !f.done {
		b[0] ^= 0xff
		f.done = true
	}
	return n, err
}

// One range's bytes corrupted on the way fail the pull on the blob's
// digest, and nothing is left at the destination.
func TestRangedPullCorruptRange(t *testing.T) {
	reg := newTestRegistry(t)
	_, blob := rangedModel(t, reg)
	p := newProxy(t, reg)
	third := splitRanges(rangedSize, 4)[2]
	p.after = func(resp *http.Response) {
		if resp.Header.Get("Content-Range") == fmt.Sprintf("bytes %d-%d/%d", third.start, third.end, rangedSize) {
			resp.Body = &flipReader{ReadCloser: resp.Body}
		}
	}
	out, err := rangedPull(t, p.host, 4)
	if err == nil || !strings.Contains(err.Error(), "failed digest verification") || !strings.Contains(err.Error(), strings.TrimPrefix(blob, "/blobs/")) {
		t.Fatalf("err = %v, want a digest verification failure of the large blob", err)
	}
	nothingLeft(t, out)
	if got := reg.requests("GET ", blob); len(got) != 4 {
		t.Errorf("%d GETs of the large blob, want 4 (a corrupt blob is not retried)", len(got))
	}
}

// A range answered 503 once is retried alone; a range cut short is
// resumed from its first missing byte.
func TestRangedPullRetriesOneRange(t *testing.T) {
	reg := newTestRegistry(t)
	big, blob := rangedModel(t, reg)
	p := newProxy(t, reg)
	rs := splitRanges(rangedSize, 4)
	failing := fmt.Sprintf("bytes=%d-%d", rs[2].start, rs[2].end)
	cut := fmt.Sprintf("bytes %d-%d/%d", rs[3].start, rs[3].end, rangedSize)
	var mu sync.Mutex
	failed, wasCut := false, false
	p.before = func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Range") != failing || failed {
			return false
		}
		failed = true
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"errors":[{"code":"UNAVAILABLE","message":"down for the test"}]}`)
		return true
	}
	p.after = func(resp *http.Response) {
		mu.Lock()
		defer mu.Unlock()
		if resp.Header.Get("Content-Range") == cut && !wasCut {
			wasCut = true
			// Content-Length still says the whole range: the client
			// sees the connection close early.
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(resp.Body, 100_000), resp.Body}
		}
	}
	out, err := rangedPull(t, p.host, 4)
	if err != nil {
		t.Fatal(err)
	}
	samePulled(t, out, big)
	if got := reg.requests("GET ", blob); len(got) != 4+1 {
		t.Errorf("%d GETs of the large blob reached the registry, want 5 (4 ranges, 1 resumed):\n%s", len(got), strings.Join(got, "\n"))
	}
	count := map[string]int{}
	for _, r := range p.ranges() {
		count[r]++
	}
	if count[failing] != 2 {
		t.Errorf("the range answered 503 was asked for %d times, want 2: %v", count[failing], count)
	}
	rest := fmt.Sprintf("bytes=%d-%d", rs[3].start+100_000, rs[3].end)
	if count[rest] != 1 {
		t.Errorf("the range cut short was not resumed from its first missing byte (%s): %v", rest, count)
	}
	for _, r := range rs[:2] {
		if n := count[fmt.Sprintf("bytes=%d-%d", r.start, r.end)]; n != 1 {
			t.Errorf("range %d-%d asked for %d times, want 1", r.start, r.end, n)
		}
	}
}

// A registry that redirects blob GETs (to object storage, say) is asked
// once per blob: the ranges after the first go to the URL it redirected to.
func TestRangedPullFollowsRedirect(t *testing.T) {
	reg := newTestRegistry(t)
	big, blob := rangedModel(t, reg)
	p := newProxy(t, reg)
	var mu sync.Mutex
	redirected := map[string]int{}
	p.before = func(w http.ResponseWriter, r *http.Request) bool {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/storage"); ok {
			r.URL.Path = rest
			return false
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			redirected[r.URL.Path]++
			mu.Unlock()
			http.Redirect(w, r, "/storage"+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	out, err := rangedPull(t, p.host, 4)
	if err != nil {
		t.Fatal(err)
	}
	samePulled(t, out, big)
	if got := reg.requests("GET ", blob); len(got) != 4 {
		t.Errorf("%d GETs of the large blob reached the registry, want 4", len(got))
	}
	if n := redirected["/v2/team/m"+blob]; n != 1 {
		t.Errorf("the large blob's registry URL was asked for %d times, want 1 (the ranges after the first use the URL it redirects to)", n)
	}
}
