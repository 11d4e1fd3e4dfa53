package policy

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Watcher keeps the policy of a file in force for a long-running process
// (modelreg serve), so that editing the trust policy takes effect without a
// restart, and a broken edit never opens a gate.
//
// Use: NewWatcher at start-up (an invalid file is a start-up error); call
// Current for every decision (it is cheap, lock-free, and re-checks the
// file at most once per second); call Reload on SIGHUP (it re-reads the
// file now, whatever its stamp); publish Status (it has JSON tags) on a
// status endpoint, so operators see which policy is in force and why a new
// file was not taken.
//
// A file is re-read when its size, modification time or identity (inode,
// as os.SameFile tells it: an editor or a Kubernetes ConfigMap that
// replaces the file by rename) changes. A new version that does not load
// keeps the old policy in force and is logged at ERROR (once per distinct
// error, not every second); so is a deleted file. Key files the policy
// names are read when the policy is; replacing a key file alone is not
// noticed: touch the policy file or send SIGHUP.
type Watcher struct {
	path string
	log  *slog.Logger
	// interval is the least time between two checks of the file by Current.
	interval time.Duration

	cur     atomic.Pointer[Policy]
	checked atomic.Int64 // unix nanoseconds of the last check

	mu       sync.Mutex // serializes loads; guards what follows
	stat     os.FileInfo
	loadedAt time.Time
	lastErr  error
	errAt    time.Time
}

// WatchStatus is what a server publishes about its policy: enough to tell
// which file and which version of it is in force, and whether a newer
// version was refused.
type WatchStatus struct {
	// Path is the policy file.
	Path string `json:"path"`
	// Digest is the sha256 of the file's bytes in force, as promotion
	// records name it.
	Digest string `json:"digest"`
	// LoadedAt is when the policy in force was read.
	LoadedAt time.Time `json:"loadedAt"`
	// Stages are the stages the policy in force protects, sorted.
	Stages []string `json:"stages"`
	// RevokedKeys are the keys the policy in force revokes (RevokedKeys).
	RevokedKeys []RevokedKey `json:"revokedKeys"`
	// Error is why the file's current content is not in force (it does not
	// load, or the file is gone); "" when the file is what is in force.
	Error string `json:"error,omitempty"`
	// ErrorAt is when Error was last seen.
	ErrorAt *time.Time `json:"errorAt,omitempty"`
}

// NewWatcher loads path. An invalid file is an error here, since there is
// no older policy to keep. log receives reloads and refusals (nil: the
// default logger).
func NewWatcher(path string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{path: path, log: log, interval: time.Second}
	p, info, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur.Store(p)
	w.stat, w.loadedAt = info, time.Now()
	w.checked.Store(w.loadedAt.UnixNano())
	return w, nil
}

// NewOptionalWatcher watches a policy file that may not exist yet (a
// server's default policy place): until it appears there is no policy, and
// it is taken within a second of appearing. Once a policy was loaded, the
// file going away keeps it in force, as with NewWatcher.
func NewOptionalWatcher(path string, log *slog.Logger) (*Watcher, error) {
	if _, err := os.Stat(path); err == nil {
		return NewWatcher(path, log)
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{path: path, log: log, interval: time.Second}
	w.checked.Store(time.Now().UnixNano())
	return w, nil
}

// load reads the file once, between two stats that must agree, so a file
// being written in place is not taken half-written.
func (w *Watcher) load() (*Policy, os.FileInfo, error) {
	before, err := os.Stat(w.path)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	data, err := os.ReadFile(w.path)
	if err != nil {
		return nil, before, fmt.Errorf("policy: %w", err)
	}
	after, err := os.Stat(w.path)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	if changed(before, after) || int64(len(data)) != after.Size() {
		return nil, nil, fmt.Errorf("policy %s changed while it was read; it is read again at the next check", w.path)
	}
	p, err := Parse(data, filepath.Dir(w.path))
	if err != nil {
		return nil, after, fmt.Errorf("policy %s: %w", w.path, err)
	}
	p.Source = w.path
	return p, after, nil
}

// changed reports whether b is another file, or the same one modified,
// than a.
func changed(a, b os.FileInfo) bool {
	return a == nil || b == nil || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) || !os.SameFile(a, b)
}

// Current is the policy in force. It is cheap and safe for concurrent use:
// one caller per interval stats the file (and reloads it when it changed);
// the others return the policy in force without waiting. A nil Watcher
// has no policy.
func (w *Watcher) Current() *Policy {
	if w == nil {
		return nil
	}
	now := time.Now().UnixNano()
	last := w.checked.Load()
	if now-last >= int64(w.interval) && w.checked.CompareAndSwap(last, now) {
		w.check()
	}
	return w.cur.Load()
}

// check reloads the file if its stamp changed since it was last read.
func (w *Watcher) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	info, err := os.Stat(w.path)
	switch {
	case err != nil && w.cur.Load() == nil:
		// An optional policy that does not exist yet: nothing to keep.
	case err != nil:
		w.fail(fmt.Errorf("policy: %w", err))
	case changed(w.stat, info):
		w.reloadLocked("file changed")
	}
}

// Reload re-reads the file now, whatever its stamp (for SIGHUP). It
// returns why the file was not taken; the policy in force is then
// unchanged.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checked.Store(time.Now().UnixNano())
	return w.reloadLocked("reload requested")
}

func (w *Watcher) reloadLocked(why string) error {
	p, info, err := w.load()
	if err != nil {
		if info != nil {
			w.stat = info // do not re-parse the same broken file every second
		}
		w.fail(err)
		return err
	}
	old := w.cur.Load()
	w.cur.Store(p)
	w.stat, w.loadedAt, w.lastErr = info, time.Now(), nil
	stages := slices.Sorted(maps.Keys(p.Stages))
	if old == nil {
		w.log.Info("policy loaded", "path", w.path, "digest", p.Digest, "stages", stages, "why", why)
		return nil
	}
	if old.Digest == p.Digest {
		w.log.Info("policy re-read, unchanged", "path", w.path, "digest", p.Digest, "why", why)
		return nil
	}
	w.log.Info("policy reloaded", "path", w.path, "digest", p.Digest, "previous", old.Digest, "stages", stages, "why", why)
	for name := range old.Stages {
		if _, ok := p.Stages[name]; !ok {
			w.log.Warn("stage no longer protected by the policy: anyone with push rights may now move it", "stage", name, "path", w.path, "digest", p.Digest)
		}
	}
	return nil
}

// fail records why the file is not in force, logging it at ERROR when it
// is new (a file that stays broken is not logged every second).
func (w *Watcher) fail(err error) {
	if w.lastErr == nil || w.lastErr.Error() != err.Error() {
		cur := w.cur.Load()
		if cur == nil {
			w.log.Error("POLICY NOT LOADED: the policy file cannot be used; no stage is protected until it is fixed", "path", w.path, "err", err)
			w.lastErr, w.errAt = err, time.Now()
			return
		}
		w.log.Error("POLICY NOT RELOADED: the policy file cannot be used; the policy loaded before stays in force until the file is fixed",
			"path", w.path, "err", err, "in_force", cur.Digest, "in_force_since", w.loadedAt.Format(time.RFC3339),
			"protected_stages", slices.Sorted(maps.Keys(cur.Stages)))
	}
	w.lastErr, w.errAt = err, time.Now()
}

// Status reports the policy in force and the last error.
func (w *Watcher) Status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := WatchStatus{Path: w.path, Stages: []string{}}
	if cur := w.cur.Load(); cur != nil {
		s.Digest, s.LoadedAt, s.Stages = cur.Digest, w.loadedAt, slices.Sorted(maps.Keys(cur.Stages))
		s.RevokedKeys = cur.RevokedKeys()
	}
	if w.lastErr != nil {
		at := w.errAt
		s.Error, s.ErrorAt = w.lastErr.Error(), &at
	}
	return s
}
