package policy

import (
	"bytes"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// watchFixture is a policy file in a temporary directory with keys a and
// b, written with distinct modification times so each write is a change
// whatever the file system's timestamp resolution.
type watchFixture struct {
	t    *testing.T
	dir  string
	path string
	n    int
	logs *bytes.Buffer
}

func newWatchFixture(t *testing.T) *watchFixture {
	dir := t.TempDir()
	writeKeys(t, dir, "a", "b")
	return &watchFixture{t: t, dir: dir, path: filepath.Join(dir, "policy.yaml"), logs: &bytes.Buffer{}}
}

func (f *watchFixture) write(doc string) {
	f.t.Helper()
	if err := os.WriteFile(f.path, []byte(doc), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.n++
	mt := time.Unix(1_700_000_000+int64(f.n), 0)
	if err := os.Chtimes(f.path, mt, mt); err != nil {
		f.t.Fatal(err)
	}
}

func (f *watchFixture) watcher() *Watcher {
	f.t.Helper()
	w, err := NewWatcher(f.path, slog.New(slog.NewTextHandler(f.logs, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	w.interval = 0 // every Current checks the file
	return w
}

func stages(p *Policy) string { return strings.Join(slices.Sorted(maps.Keys(p.Stages)), ",") }

const (
	stagingOnly = "version: 1\nkeys:\n  a: a.pub\n  b: b.pub\nstages:\n  staging:\n    signatures: {keys: [a], threshold: 1}\n"
	withProd    = stagingOnly + "  production:\n    signatures: {keys: [a, b], threshold: 2}\n"
	broken      = "version: 1\nkeys:\n  a: a.pub\nstages:\n  production:\n    signatures: {keys: [a, dave], threshold: 1}\n"
)

func TestWatcherFollowsTheFile(t *testing.T) {
	f := newWatchFixture(t)
	f.write(stagingOnly)
	w := f.watcher()
	first := w.Current()
	if stages(first) != "staging" {
		t.Fatalf("initial stages %q", stages(first))
	}

	// A change is in force at the next Current.
	f.write(withProd)
	p := w.Current()
	if stages(p) != "production,staging" || p.Digest == first.Digest {
		t.Fatalf("after the change: stages %q, digest %s", stages(p), p.Digest)
	}
	st := w.Status()
	if st.Digest != p.Digest || st.Error != "" || st.ErrorAt != nil || strings.Join(st.Stages, ",") != "production,staging" || st.Path != f.path {
		t.Errorf("status after the change: %+v", st)
	}
	good := p.Digest

	// A broken file keeps the old policy, says why, and logs it once at
	// ERROR however often the file is checked.
	f.write(broken)
	for range 5 {
		if got := w.Current(); got.Digest != good {
			t.Fatalf("a broken file replaced the policy in force: %s", got.Digest)
		}
	}
	st = w.Status()
	if st.Digest != good || !strings.Contains(st.Error, `names key "dave"`) || !strings.Contains(st.Error, "line 6") || st.ErrorAt == nil {
		t.Errorf("status with a broken file: %+v", st)
	}
	if n := strings.Count(f.logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines for one broken file, want 1:\n%s", n, f.logs)
	}

	// Fixed again: the new policy is in force and the error is gone.
	f.write(stagingOnly)
	if got := w.Current(); stages(got) != "staging" {
		t.Fatalf("after the fix: stages %q", stages(got))
	}
	if st := w.Status(); st.Error != "" || st.ErrorAt != nil || st.Digest != first.Digest {
		t.Errorf("status after the fix: %+v", st)
	}
	if !strings.Contains(f.logs.String(), "stage no longer protected") || !strings.Contains(f.logs.String(), "stage=production") {
		t.Errorf("dropping a protected stage was not warned about:\n%s", f.logs)
	}
}

func TestWatcherDeletedFileKeepsPolicy(t *testing.T) {
	f := newWatchFixture(t)
	f.write(withProd)
	w := f.watcher()
	good := w.Current().Digest
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := w.Current(); got.Digest != good {
			t.Fatalf("a deleted file changed the policy in force")
		}
	}
	if st := w.Status(); !strings.Contains(st.Error, "no such file") || st.Digest != good {
		t.Errorf("status with the file deleted: %+v", st)
	}
	if err := w.Reload(); err == nil {
		t.Error("Reload of a deleted file succeeded")
	}
	if n := strings.Count(f.logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines for one deleted file, want 1:\n%s", n, f.logs)
	}
	f.write(stagingOnly)
	if got := w.Current(); stages(got) != "staging" || w.Status().Error != "" {
		t.Errorf("after the file came back: %q, %+v", stages(got), w.Status())
	}
}

// A file replaced by rename with the same size and modification time (a
// ConfigMap update, `cp -p`) is still noticed: it is another inode.
func TestWatcherNoticesReplacementByRename(t *testing.T) {
	f := newWatchFixture(t)
	f.write(strings.Replace(withProd, "threshold: 2", "threshold: 1", 1))
	w := f.watcher()
	before := w.Current().Digest
	info, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(f.dir, "policy.yaml.new")
	if err := os.WriteFile(tmp, []byte(withProd), 0o644); err != nil { // same length: "1" became "2"
		t.Fatal(err)
	}
	os.Chtimes(tmp, info.ModTime(), info.ModTime())
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
	if got := w.Current(); got.Digest == before || got.Stages["production"].Signatures.Threshold != 2 {
		t.Errorf("a file replaced by rename was not re-read (threshold %d)", got.Stages["production"].Signatures.Threshold)
	}
}

func TestWatcherReload(t *testing.T) {
	f := newWatchFixture(t)
	f.write(stagingOnly)
	w := f.watcher()
	w.interval = time.Hour // only Reload reads the file
	f.write(withProd)
	if stages(w.Current()) != "staging" {
		t.Fatal("Current checked the file within the interval")
	}
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if stages(w.Current()) != "production,staging" {
		t.Errorf("after Reload: %q", stages(w.Current()))
	}
	f.write(broken)
	if err := w.Reload(); err == nil || !strings.Contains(err.Error(), "dave") {
		t.Errorf("Reload of a broken file: %v", err)
	}
	if stages(w.Current()) != "production,staging" || w.Status().Error == "" {
		t.Errorf("after a failed Reload: %q, %+v", stages(w.Current()), w.Status())
	}

	// An invalid file at start-up is an error: there is nothing to keep.
	if _, err := NewWatcher(f.path, nil); err == nil {
		t.Error("NewWatcher accepted a broken file")
	}
	// A nil Watcher protects nothing.
	var none *Watcher
	if none.Current() != nil {
		t.Error("nil Watcher has a policy")
	}
}

// Current is safe while the file changes (run with -race).
func TestWatcherConcurrentUse(t *testing.T) {
	f := newWatchFixture(t)
	f.write(stagingOnly)
	w := f.watcher()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if p := w.Current(); p == nil || p.Stages["staging"].Signatures == nil {
					t.Error("no policy in force")
					return
				}
				_ = w.Status()
			}
		})
	}
	for i := range 20 {
		if i%2 == 0 {
			f.write(withProd)
		} else {
			f.write(stagingOnly)
		}
	}
	wg.Wait()
}
