package server

import (
	"context"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/sync/singleflight"
)

// maxAnswerBytes bounds the encoded answers the cache holds; when a new
// one would pass it, the cache starts over.
const maxAnswerBytes = 64 << 20

// answers keeps the encoded JSON answers of the model API's hot index
// reads (search, model list, versions of a model) until the next write to
// the index. Under load most requests ask what another just asked (a
// dashboard, deploy pipelines polling a stage): answering those from
// memory, already encoded, is what lets search throughput follow the
// clients rather than SQLite, and leaves the CPU to manifest GETs.
//
// Exactness comes from the index's generation (index.Generation), which
// advances after every committed write: an answer is stored with the
// generation read before its query ran and served only while that is
// still the current one, so no answer older than the last committed write
// is ever served. With an access policy, answers are filtered by read
// rights, so the key starts with the subject (who: see answerKey).
type answers struct {
	mu      sync.Mutex
	gen     uint64
	entries map[string][]byte
	bytes   int
	// flight makes concurrent identical misses one query.
	flight singleflight.Group
}

func (c *answers) get(gen uint64, key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return nil, false
	}
	b, ok := c.entries[key]
	return b, ok
}

func (c *answers) put(gen uint64, key string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case gen < c.gen:
		return // a write committed while this answer was computed
	case gen > c.gen || c.entries == nil || c.bytes+len(b) > maxAnswerBytes:
		c.gen, c.entries, c.bytes = gen, map[string][]byte{}, 0
	}
	if len(b) > maxAnswerBytes {
		return
	}
	c.entries[key] = b
	c.bytes += len(b)
}

// serve answers r (as who) from the cache, or computes the answer with compute
// (once for concurrent identical requests), encodes, stores and sends it.
// Errors are never cached.
func (c *answers) serve(w http.ResponseWriter, r *http.Request, who string, gen uint64, compute func(ctx context.Context) (any, error), fail func(error)) {
	key := who + r.URL.Path + "?" + r.URL.RawQuery
	if b, ok := c.get(gen, key); ok {
		writeEncoded(w, http.StatusOK, "application/json", b)
		return
	}
	ch := c.flight.DoChan(strconv.FormatUint(gen, 10)+"\x00"+key, func() (any, error) {
		// Shared by every waiter: one request's cancellation must not
		// fail the others.
		v, err := compute(context.WithoutCancel(r.Context()))
		if err != nil {
			return nil, err
		}
		b, err := encodeJSON(v)
		if err != nil {
			return nil, err
		}
		c.put(gen, key, b)
		return b, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			fail(res.Err)
			return
		}
		writeEncoded(w, http.StatusOK, "application/json", res.Val.([]byte))
	case <-r.Context().Done():
	}
}
