package server

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelreg/modelreg/pkg/access"
)

// accessHolder keeps the access policy in force: fixed (from the
// configuration file), or read from a file and re-read when it changes
// and on SIGHUP. An invalid new file keeps the policy in force (logged,
// and shown on the status endpoint): a typo must not open the registry,
// nor lock everyone out.
type accessHolder struct {
	cur  atomic.Pointer[access.Policy]
	path string
	log  *slog.Logger

	mu      sync.Mutex
	mod     time.Time
	lastErr string
}

func newAccessHolder(path string, fixed *access.Policy, log *slog.Logger) (*accessHolder, error) {
	h := &accessHolder{path: path, log: log}
	if fixed != nil {
		h.cur.Store(fixed)
		return h, nil
	}
	if err := h.Reload(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *accessHolder) current() *access.Policy { return h.cur.Load() }

// Reload re-reads the file; on error the policy in force stays.
func (h *accessHolder) Reload() error {
	if h.path == "" {
		return errors.New("the access policy is in the configuration file: restart to change it")
	}
	st, err := os.Stat(h.path)
	if err == nil {
		var p *access.Policy
		if p, err = access.Load(h.path); err == nil {
			h.mu.Lock()
			h.mod, h.lastErr = st.ModTime(), ""
			h.mu.Unlock()
			h.cur.Store(p)
			return nil
		}
	}
	h.mu.Lock()
	h.lastErr = err.Error()
	if st != nil {
		h.mod = st.ModTime()
	}
	h.mu.Unlock()
	return err
}

// watch re-reads the file within a second of a change, until stop closes.
func (h *accessHolder) watch(stop <-chan struct{}) {
	if h.path == "" {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st, err := os.Stat(h.path)
		h.mu.Lock()
		changed := err == nil && !st.ModTime().Equal(h.mod)
		h.mu.Unlock()
		if !changed {
			continue
		}
		if err := h.Reload(); err != nil {
			h.log.Error("the access policy file changed and does not parse; the policy in force stays", "path", h.path, "err", err)
		} else {
			h.log.Info("access policy reloaded", "path", h.path, "digest", h.current().Digest)
		}
	}
}

// status is what the status endpoint says of the access policy.
func (h *accessHolder) status() map[string]string {
	p := h.current()
	st := map[string]string{"path": p.Source, "digest": p.Digest}
	h.mu.Lock()
	if h.lastErr != "" {
		st["error"] = h.lastErr
	}
	h.mu.Unlock()
	return st
}
