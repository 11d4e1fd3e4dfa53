package client

import (
	"testing"
	"time"
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
	c.rememberLink("fast.example.com", 1<<30, time.Second)
	c.rememberLink("slow.example.com", 1<<30, 20*time.Second)
	c.rememberLink("tiny.example.com", 1<<20, time.Millisecond)
	c.rememberLink("127.0.0.1:7000", 1<<30, 40*time.Second) // a loopback proxy in front of a slow link
	for host, want := range map[string]bool{"fast.example.com": false, "slow.example.com": true, "tiny.example.com": true, "127.0.0.1:7000": true} {
		if got, _ := c.hashFirst(host, DedupeAuto); got != want {
			t.Errorf("after a remembered push, hashFirst(%s) = %v, want %v", host, got, want)
		}
	}
	if _, err := c.hashFirst("x", "fast"); err == nil {
		t.Error("an unknown dedupe mode was accepted")
	}
}
