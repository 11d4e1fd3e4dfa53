package client

import (
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/transfer"
)

// The dedupe rule: loopback streams, an unknown or slow link hashes first,
// a link remembered as fast streams, and the flag overrides.
func TestHashFirstRule(t *testing.T) {
	c := New(Options{CacheDir: t.TempDir()})
	for _, tc := range []struct {
		host string
		d    Dedupe
		want bool
	}{
		{"localhost:5000", DedupeAuto, false},
		{"127.0.0.1:5000", "", false},
		{"registry.example.com", DedupeAuto, true},
		{"registry.example.com", DedupeStream, false},
		{"localhost:5000", DedupeHash, true},
	} {
		if got, err := c.hashFirst(tc.host, tc.d); err != nil || got != tc.want {
			t.Errorf("hashFirst(%s, %q) = %v, %v; want %v", tc.host, tc.d, got, err, tc.want)
		}
	}
	// A fast push is remembered: the next one streams; a small one says nothing.
	c.rememberLink("fast.example.com", 1<<30, time.Second, 0)
	c.rememberLink("slow.example.com", 1<<30, 20*time.Second, 0)
	c.rememberLink("tiny.example.com", 1<<20, time.Millisecond, 0)
	c.rememberLink("127.0.0.1:7000", 1<<30, 40*time.Second, 0) // a loopback proxy in front of a slow link
	for host, want := range map[string]bool{"fast.example.com": false, "slow.example.com": true, "tiny.example.com": true, "127.0.0.1:7000": true} {
		if got, _ := c.hashFirst(host, DedupeAuto); got != want {
			t.Errorf("after a remembered push, hashFirst(%s) = %v, want %v", host, got, want)
		}
	}
	if _, err := c.hashFirst("x", "fast"); err == nil {
		t.Error("an unknown dedupe mode was accepted")
	}
}

// The parts rule: the caller's choice first; one connection on loopback or
// where one connection was seen to carry fastLink; else several. A push
// that measured no single request keeps the connection speed it knew.
func TestPartConnectionsRule(t *testing.T) {
	c := New(Options{CacheDir: t.TempDir()})
	c.rememberLink("fat.example.com", 1<<30, time.Second, 900e6)
	c.rememberLink("capped.example.com", 1<<30, time.Second, 25e6) // fast overall, over many capped connections
	c.rememberLink("capped.example.com", 1<<30, time.Second, 0)
	for _, tc := range []struct {
		host string
		n    int
		want int
	}{
		{"localhost:5000", 0, 1},
		{"localhost:5000", 8, 8},
		{"registry.example.com", 0, transfer.DefaultRangeConnections},
		{"fat.example.com", 0, 1},
		{"capped.example.com", 0, transfer.DefaultRangeConnections},
		{"fat.example.com", 4, 4},
	} {
		if got := c.partConnections(tc.host, tc.n); got != tc.want {
			t.Errorf("partConnections(%s, %d) = %d, want %d", tc.host, tc.n, got, tc.want)
		}
	}
	// The capped host's whole-push rate is fast: the dedupe rule streams there.
	if hf, _ := c.hashFirst("capped.example.com", DedupeAuto); hf {
		t.Error("a push remembered at 1 GiB/s still hashes first")
	}
}
