// Package progress reports transfers to a person: live bars on a terminal,
// one quiet line per finished file otherwise (CI logs, pipes).
package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// Reporter hands out one Tracker per transferred file.
type Reporter interface {
	// Track starts reporting a transfer of size bytes named name; verb says
	// what a transfer that runs to its end did ("pushed", "pulled").
	Track(verb, name string, size int64) Tracker
	// Wait flushes the display; call it once every tracker is done.
	Wait()
}

// Tracker follows one transfer.
type Tracker interface {
	// Add records n more bytes moved.
	Add(n int)
	// Done ends the transfer; verb says what happened ("pushed", "exists").
	// A transfer that has moved all its bytes may already show as done
	// with Track's verb.
	Done(verb string)
	// Fail ends the transfer with an error.
	Fail(err error)
}

// New returns a reporter writing to w: bars when tty is true, lines otherwise.
func New(w io.Writer, tty bool) Reporter {
	if tty {
		return &bars{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(32), mpb.PopCompletedMode())}
	}
	return &lines{w: w}
}

// Discard returns a reporter that prints nothing.
func Discard() Reporter { return discard{} }

type discard struct{}

func (discard) Track(string, string, int64) Tracker { return discard{} }
func (discard) Wait()                               {}
func (discard) Add(int)                             {}
func (discard) Done(string)                         {}
func (discard) Fail(error)                          {}

// Reader counts what r yields into t.
func Reader(r io.Reader, t Tracker) io.Reader { return &countingReader{r: r, t: t} }

type countingReader struct {
	r io.Reader
	t Tracker
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.t.Add(n)
	return n, err
}

// Size formats a byte count the way people read it (1.5 GiB).
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

type lines struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lines) Track(_, name string, size int64) Tracker { return &line{l: l, name: name, size: size} }
func (l *lines) Wait()                                    {}

type line struct {
	l    *lines
	name string
	size int64
	done atomic.Int64
}

func (t *line) Add(n int) { t.done.Add(int64(n)) }
func (t *line) Done(verb string) {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	fmt.Fprintf(t.l.w, "%-7s %s (%s)\n", verb, t.name, Size(t.size))
}
func (t *line) Fail(err error) {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	fmt.Fprintf(t.l.w, "failed  %s: %v\n", t.name, err)
}

type bars struct{ p *mpb.Progress }

// Track adds a live bar. When the transfer ends, the bar turns into the
// same "verb name (size)" line that non-terminals get, and PopCompletedMode
// moves it above the bars still running.
func (b *bars) Track(verb, name string, size int64) Tracker {
	label := name
	if len(label) > 40 {
		label = "…" + label[len(label)-39:]
	}
	t := &barTracker{name: name, size: size}
	t.verb.Store(verb)
	t.bar = b.p.AddBar(size,
		mpb.PrependDecorators(decor.Any(func(st decor.Statistics) string {
			if st.Completed {
				v, _ := t.verb.Load().(string)
				return fmt.Sprintf("%-7s %s (%s)", v, t.name, Size(t.size))
			}
			return label
		}, decor.WC{C: decor.DindentRight | decor.DextraSpace})),
		mpb.AppendDecorators(
			decor.OnComplete(decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"), ""),
			decor.OnComplete(decor.Name(" "), ""),
			decor.OnComplete(decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace), ""),
		),
		mpb.BarFillerClearOnComplete(),
	)
	return t
}

func (b *bars) Wait() { b.p.Wait() }

type barTracker struct {
	bar  *mpb.Bar
	name string
	size int64
	verb atomic.Value
}

func (t *barTracker) Add(n int) { t.bar.IncrBy(n) }
func (t *barTracker) Done(verb string) {
	t.verb.Store(verb)
	t.bar.SetTotal(-1, true)
}

// Fail drops the bar: the command reports the error itself.
func (t *barTracker) Fail(error) { t.bar.Abort(true) }
