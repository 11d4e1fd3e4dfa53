package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// A 96 MiB file (above the 64 MiB threshold) pulled from modelreg serve
// with --connections 4 arrives as 4 Range requests, each answered 206, and
// is byte for byte the pushed file; --connections 1 fetches it in one GET.
func TestRangedPull(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 96<<20, 11)
	writeFile(t, filepath.Join(src, "config.json"), `{"layers": 12}`, 0o644)
	e.ok("push", reg.Addr+"/team/ranged:1.0.0", src)

	// A proxy in front of the server records the Range header and status
	// of every blob GET.
	target, _ := url.Parse("http://" + reg.Addr)
	var (
		mu   sync.Mutex
		gets []string
	)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") {
				mu.Lock()
				gets = append(gets, resp.Request.Header.Get("Range")+" "+resp.Status)
				mu.Unlock()
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	defer srv.Close()
	proxied := strings.TrimPrefix(srv.URL, "http://")
	ref := proxied + "/team/ranged:1.0.0"

	for _, c := range []struct {
		conns string
		want  []string // the large blob's Range GETs, sorted
		whole int      // GETs of the large blob without Range
	}{
		{"4", []string{
			"bytes=0-25165823 206 Partial Content",
			"bytes=25165824-50331647 206 Partial Content",
			"bytes=50331648-75497471 206 Partial Content",
			"bytes=75497472-100663295 206 Partial Content",
		}, 0},
		{"1", nil, 1},
	} {
		t.Run("connections="+c.conns, func(t *testing.T) {
			mu.Lock()
			gets = nil
			mu.Unlock()
			out := filepath.Join(e.dir, "out-"+c.conns)
			e.ok("pull", ref, "-o", out, "--connections", c.conns)
			sameTree(t, tree(t, src), tree(t, out))
			mu.Lock()
			got := slices.Clone(gets)
			mu.Unlock()
			// The config blob and config.json are small: one GET each,
			// without Range.
			var ranged []string
			for _, g := range got {
				if strings.HasPrefix(g, "bytes=") {
					ranged = append(ranged, g)
				}
			}
			slices.Sort(ranged)
			if !slices.Equal(ranged, c.want) || len(got)-len(ranged) != 2+c.whole {
				t.Errorf("blob GETs %q, want the large file as %q and %d GETs without Range", got, c.want, 2+c.whole)
			}
		})
	}
	e.fails([]string{"--connections"}, "pull", ref, "-o", filepath.Join(e.dir, "bad"), "--connections", "-1")
}
