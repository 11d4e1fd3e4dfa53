package policy

import (
	"testing"
	"time"
)

// A server's default policy place may be empty at start: no policy until
// a file appears there, then that file's policy.
func TestOptionalWatcherTakesTheFileWhenItAppears(t *testing.T) {
	f := newWatchFixture(t)
	path := f.path
	w, err := NewOptionalWatcher(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.interval = time.Millisecond
	if p := w.Current(); p != nil {
		t.Fatalf("a policy before the file exists: %+v", p)
	}
	if st := w.Status(); st.Error != "" || len(st.Stages) != 0 {
		t.Errorf("status without a file: %+v", st)
	}
	f.write(withProd)
	deadline := time.Now().Add(5 * time.Second)
	for w.Current() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the file that appeared was not taken; status %+v", w.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, ok := w.Current().Stage("production"); !ok {
		t.Errorf("the policy taken does not protect production: %+v", w.Current())
	}
}
