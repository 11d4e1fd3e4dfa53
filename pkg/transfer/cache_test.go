package transfer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func stat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A digest is trusted while the file keeps its size, modification time
// and inode, across a save and a reload; any change makes it unknown.
func TestDigestCache(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	os.WriteFile(p, []byte("weights"), 0o644)
	d := digest.FromString("weights")
	cachePath := filepath.Join(dir, "cache", "digests.json")
	c := OpenDigestCache(cachePath)
	if _, ok := c.Get(p, stat(t, p)); ok {
		t.Fatal("an empty cache knows a file")
	}
	c.Put(p, stat(t, p), d, "localhost:5000/team/a")
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}

	c = OpenDigestCache(cachePath)
	if got, ok := c.Get(p, stat(t, p)); !ok || got != d {
		t.Errorf("after reload: %v %v, want %v", got, ok, d)
	}
	if got := c.Repos(p, stat(t, p)); !slices.Equal(got, []string{"localhost:5000/team/a"}) {
		t.Errorf("repos %v", got)
	}

	later := time.Now().Add(time.Hour)
	os.Chtimes(p, later, later)
	if _, ok := c.Get(p, stat(t, p)); ok {
		t.Error("a file with a new modification time is still known")
	}
	if c.Repos(p, stat(t, p)) != nil {
		t.Error("a changed file is still known to be in a repository")
	}
	c.Put(p, stat(t, p), d, "")

	os.WriteFile(p, []byte("weights, longer"), 0o644)
	os.Chtimes(p, later, later)
	if _, ok := c.Get(p, stat(t, p)); ok {
		t.Error("a file of another size is still known")
	}

	if runtime.GOOS != "windows" {
		// Replaced by another file (a rename over it) with the same size and time.
		c.Put(p, stat(t, p), digest.FromString("weights, longer"), "")
		tmp := filepath.Join(dir, "new")
		os.WriteFile(tmp, []byte("WEIGHTS, LONGER"), 0o644)
		os.Chtimes(tmp, later, later)
		keep := filepath.Join(dir, "keep") // holds the old inode, so it is not reused
		os.Link(p, keep)
		os.Rename(tmp, p)
		if _, ok := c.Get(p, stat(t, p)); ok {
			t.Error("a file replaced by another with the same size and time is still known")
		}
	}
}

// A repository is remembered once, the 8 latest are kept, and a new digest
// forgets where the old one was.
func TestDigestCacheRepos(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("x"), 0o644)
	info := stat(t, p)
	c := OpenDigestCache(filepath.Join(t.TempDir(), "digests.json"))
	d := digest.FromString("x")
	for i := range 10 {
		c.Put(p, info, d, fmt.Sprintf("r/%d", i))
		c.Put(p, info, d, fmt.Sprintf("r/%d", i))
	}
	want := []string{"r/2", "r/3", "r/4", "r/5", "r/6", "r/7", "r/8", "r/9"}
	if got := c.Repos(p, info); !slices.Equal(got, want) {
		t.Errorf("repos %v, want %v", got, want)
	}
	c.Put(p, info, digest.FromString("y"), "r/new")
	if got := c.Repos(p, info); !slices.Equal(got, []string{"r/new"}) {
		t.Errorf("after a new digest: repos %v", got)
	}
}

// A missing or unreadable cache file is an empty cache, and a nil cache
// (--no-cache) knows nothing and saves nothing.
func TestDigestCacheEmpty(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("x"), 0o644)
	bad := filepath.Join(dir, "digests.json")
	os.WriteFile(bad, []byte("{not json"), 0o644)
	for _, c := range []*DigestCache{OpenDigestCache(filepath.Join(dir, "missing.json")), OpenDigestCache(bad), nil} {
		if _, ok := c.Get(p, stat(t, p)); ok {
			t.Errorf("%v knows a file", c)
		}
	}
	var none *DigestCache
	none.Put(p, stat(t, p), digest.FromString("x"), "r")
	if err := none.Save(); err != nil {
		t.Errorf("nil cache: %v", err)
	}
}

// Save reports why it could not write; a save that succeeds leaves the
// cache file alone, no temporary file beside it.
func TestDigestCacheSave(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	if err := OpenDigestCache(filepath.Join(blocker, "digests.json")).Save(); err == nil {
		t.Error("saved under a regular file")
	}
	cacheDir := filepath.Join(dir, "cache")
	if err := OpenDigestCache(filepath.Join(cacheDir, "digests.json")).Save(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(cacheDir)
	if len(entries) != 1 || entries[0].Name() != "digests.json" {
		t.Errorf("cache directory holds %v", entries)
	}
}
