package transfer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
)

// DigestCache remembers the digest of each file pushed from this machine,
// keyed by path and checked against size, modification time and inode, as
// git's index does: a re-push hashes only the files that changed. It also
// remembers which repositories received each digest, so a push to another
// repository of the same registry can mount the blob instead of sending it.
type DigestCache struct {
	path string
	mu   sync.Mutex
	m    map[string]cacheEntry
}

type cacheEntry struct {
	Size   int64    `json:"size"`
	ModNs  int64    `json:"mtime"`
	Ino    uint64   `json:"ino"`
	Digest string   `json:"digest"`
	Repos  []string `json:"repos,omitempty"`
}

// OpenDigestCache loads the cache file at path (a missing or unreadable
// file is an empty cache).
func OpenDigestCache(path string) *DigestCache {
	c := &DigestCache{path: path, m: map[string]cacheEntry{}}
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &c.m)
	}
	return c
}

func (c *DigestCache) lookup(abs string, info os.FileInfo) (cacheEntry, bool) {
	if c == nil {
		return cacheEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[abs]
	if !ok || e.Size != info.Size() || e.ModNs != info.ModTime().UnixNano() || e.Ino != inode(info) {
		return cacheEntry{}, false
	}
	return e, true
}

// Get returns the cached digest of a file, if it has not changed since.
func (c *DigestCache) Get(abs string, info os.FileInfo) (digest.Digest, bool) {
	e, ok := c.lookup(abs, info)
	return digest.Digest(e.Digest), ok
}

// Repos lists the repositories known to hold a file's current content.
func (c *DigestCache) Repos(abs string, info os.FileInfo) []string {
	e, _ := c.lookup(abs, info)
	return e.Repos
}

// Put records a file's digest and a repository that now holds it.
func (c *DigestCache) Put(abs string, info os.FileInfo, d digest.Digest, repo string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[abs]
	if !ok || e.Digest != d.String() {
		e = cacheEntry{Digest: d.String()}
	}
	e.Size, e.ModNs, e.Ino = info.Size(), info.ModTime().UnixNano(), inode(info)
	if repo != "" && !slices.Contains(e.Repos, repo) {
		e.Repos = append(e.Repos, repo)
		if len(e.Repos) > 8 {
			e.Repos = e.Repos[len(e.Repos)-8:]
		}
	}
	c.m[abs] = e
}

// Save writes the cache atomically. Push reports its error as a warning:
// a cache that was not saved costs the next push a read of every file,
// nothing else.
func (c *DigestCache) Save() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	b, err := json.Marshal(c.m)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), ".digests-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
