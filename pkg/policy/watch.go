package policy

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"
)

// Watcher keeps the policy of a file in force for a long-running server:
// it re-reads the file when it changes (checked at most once a second, on
// use) and on Reload (SIGHUP). A new version that does not parse keeps the
// old policy in force, loudly: a typo in the policy must never open a gate.
type Watcher struct {
	path string
	log  *slog.Logger

	mu       sync.Mutex
	cur      *Policy
	stamp    fileStamp
	checked  time.Time
	loadedAt time.Time
	lastErr  error
	errAt    time.Time
}

// fileStamp tells a changed file: size and modification time (an editor
// that replaces the file by rename changes both).
type fileStamp struct {
	size  int64
	mtime time.Time
}

func stampOf(info os.FileInfo) fileStamp { return fileStamp{size: info.Size(), mtime: info.ModTime()} }

// WatchStatus is what a server publishes about its policy.
type WatchStatus struct {
	Path     string    `json:"path"`
	Digest   string    `json:"digest"`
	LoadedAt time.Time `json:"loadedAt"`
	Stages   []string  `json:"stages"`
	// Error is why the file's current content is not in force ("" when it is).
	Error   string     `json:"error,omitempty"`
	ErrorAt *time.Time `json:"errorAt,omitempty"`
}

// NewWatcher loads path; an invalid file is an error here, since there is
// no older policy to keep.
func NewWatcher(path string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{path: path, log: log}
	p, st, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur, w.stamp, w.loadedAt, w.checked = p, st, time.Now(), time.Now()
	return w, nil
}

func (w *Watcher) load() (*Policy, fileStamp, error) {
	info, err := os.Stat(w.path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("policy: %w", err)
	}
	p, err := Load(w.path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	return p, stampOf(info), nil
}

// Current is the policy in force; cheap and safe for concurrent use.
func (w *Watcher) Current() *Policy {
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.checked) >= time.Second {
		w.checked = time.Now()
		info, err := os.Stat(w.path)
		switch {
		case err != nil:
			w.fail(fmt.Errorf("policy file %s: %w; the policy loaded at %s stays in force", w.path, err, w.loadedAt.Format(time.RFC3339)))
		case stampOf(info) != w.stamp:
			w.reloadLocked()
		}
	}
	return w.cur
}

// Reload re-reads the file now (SIGHUP). It returns why the file was not
// taken; the policy in force is then unchanged.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checked = time.Now()
	return w.reloadLocked()
}

func (w *Watcher) reloadLocked() error {
	p, st, err := w.load()
	if err != nil {
		w.fail(err)
		if info, serr := os.Stat(w.path); serr == nil {
			w.stamp = stampOf(info) // do not re-parse the same broken file every second
		}
		return err
	}
	w.cur, w.stamp, w.loadedAt, w.lastErr = p, st, time.Now(), nil
	w.log.Info("policy reloaded", "path", w.path, "digest", p.Digest, "stages", slices.Sorted(maps.Keys(p.Stages)))
	return nil
}

func (w *Watcher) fail(err error) {
	if w.lastErr == nil || w.lastErr.Error() != err.Error() {
		w.log.Error("the policy file is invalid; the policy in force is kept", "path", w.path, "err", err, "in_force", w.cur.Digest)
	}
	w.lastErr, w.errAt = err, time.Now()
}

// Status reports the policy in force and the last error.
func (w *Watcher) Status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := WatchStatus{Path: w.path, Digest: w.cur.Digest, LoadedAt: w.loadedAt, Stages: slices.Sorted(maps.Keys(w.cur.Stages))}
	if w.lastErr != nil {
		at := w.errAt
		s.Error, s.ErrorAt = w.lastErr.Error(), &at
	}
	return s
}
