package transfer

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// fastRetry is the default policy (its number of attempts) without the
// waits, so that tests of failures do not sleep.
var fastRetry = func() remote.RetryPolicy {
	p := remote.DefaultRetryPolicy
	p.Backoff, p.MaxBackoff = time.Millisecond, time.Millisecond
	return p
}()

// testRegistry is a distribution registry in memory, behind a log of the
// requests it received and a switch that makes it answer 503.
type testRegistry struct {
	host string
	mu   sync.Mutex
	log  []string // "METHOD /path?query"
	// fail, when set, picks the requests answered 503 Service Unavailable.
	fail func(*http.Request) bool
}

// failing makes the registry answer 503 to every request whose method is
// method and whose path contains path ("" for any).
func (r *testRegistry) failing(method, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = func(req *http.Request) bool {
		return (method == "" || req.Method == method) && strings.Contains(req.URL.Path, path)
	}
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	cfg := &configuration.Configuration{Storage: configuration.Storage{"inmemory": configuration.Parameters{}}}
	cfg.HTTP.Secret = "test-secret"
	cfg.Log.AccessLog.Disabled = true
	app := handlers.NewApp(context.Background(), cfg)
	r := &testRegistry{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		line := req.Method + " " + req.URL.Path
		if req.URL.RawQuery != "" {
			line += "?" + req.URL.RawQuery
		}
		r.log = append(r.log, line)
		fail := r.fail != nil && r.fail(req)
		r.mu.Unlock()
		if fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"errors":[{"code":"UNAVAILABLE","message":"down for the test"}]}`)
			return
		}
		app.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// requests returns the logged requests whose line contains every one of
// parts.
func (r *testRegistry) requests(parts ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
next:
	for _, l := range r.log {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

func (r *testRegistry) reset() {
	r.mu.Lock()
	r.log = nil
	r.mu.Unlock()
}

// testOptions reaches a test server: plain HTTP, no credential store, the
// fast retry policy.
func testOptions() remote.Options {
	plain := true
	return remote.Options{PlainHTTP: &plain, Username: "test", Password: "test", Retry: fastRetry}
}

// connect parses REPO:TAG on host and connects to it.
func connect(t *testing.T, host, repoTag string) (*orasremote.Repository, registry.Reference) {
	t.Helper()
	ref, err := remote.ParseReference(host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := testOptions().Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	return repo, ref
}

// streamer is the Streamer the CLI would use for repo on host.
func streamer(t *testing.T, host, repo string) *Streamer {
	t.Helper()
	o := testOptions()
	c, err := o.Client(host)
	if err != nil {
		t.Fatal(err)
	}
	return &Streamer{Client: c, Base: o.Scheme(host) + "://" + host + "/v2/" + repo, StateDir: filepath.Join(t.TempDir(), "uploads")}
}

// writeModel writes files (name → content) under a new directory and
// collects them as Push takes them.
func writeModel(t *testing.T, files map[string]string) (string, []model.File) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, collect(t, dir)
}

func collect(t *testing.T, dir string) []model.File {
	t.Helper()
	files, err := model.Collect([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// recorder is a progress.Reporter that remembers what it was told.
type recorder struct {
	mu     sync.Mutex
	tracks []string // "verb name size"
	ends   []string // "name: verb" or "name: failed"
}

func (r *recorder) Track(verb, name string, size int64) progress.Tracker {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tracks = append(r.tracks, fmt.Sprintf("%s %s %d", verb, name, size))
	return &recorded{r: r, name: name}
}

func (r *recorder) Wait() {}

type recorded struct {
	r    *recorder
	name string
}

func (t *recorded) Add(int) {}
func (t *recorded) Done(verb string) {
	t.r.mu.Lock()
	t.r.ends = append(t.r.ends, t.name+": "+verb)
	t.r.mu.Unlock()
}
func (t *recorded) Fail(error) {
	t.r.mu.Lock()
	t.r.ends = append(t.r.ends, t.name+": failed")
	t.r.mu.Unlock()
}
