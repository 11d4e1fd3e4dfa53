package progress

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 1 << 30: "1.0 GiB", 5 << 40: "5.0 TiB"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

// Off a terminal, each finished transfer is one line a log can keep.
func TestLines(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, false)
	a := r.Track("pushed", "weights/a.safetensors", 2048)
	Reader(strings.NewReader(strings.Repeat("x", 2048)), a).Read(make([]byte, 4096))
	a.Done("pushed")
	r.Track("pushed", "b.bin", 10).Done("exists")
	r.Track("pushed", "c.bin", 10).Fail(errors.New("boom"))
	r.Wait()
	want := "pushed  weights/a.safetensors (2.0 KiB)\nexists  b.bin (10 B)\nfailed  c.bin: boom\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}
