package transfer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
)

// fakeRegistry emulates distribution's upload endpoints closely enough to
// test resuming: the Location carries the offset it was issued for (as
// distribution's signed _state does), a PATCH must start at the bytes held
// and come with a Location issued for them (else 416), GET reports
// "Range: 0-<last>", and PUT verifies the digest of what it holds.
type fakeRegistry struct {
	mu      sync.Mutex
	uploads map[string][]byte
	blobs   map[digest.Digest][]byte
	nextID  int
	// cutPatch, when not 0, makes the next PATCH keep only its first
	// cutPatch bytes (none when negative) and drop the connection: a client
	// killed mid-chunk.
	cutPatch int64
	// afterGet runs after a GET's answer is written, e.g. to add bytes a
	// dying request delivers late.
	afterGet func(id string)
	// fail503 makes every request answer 503.
	fail503                  bool
	posts, deletes, patches  int
	refusedPatches, statuses int
}

func newFake(t *testing.T) (*fakeRegistry, *httptest.Server) {
	f := &fakeRegistry{uploads: map[string][]byte{}, blobs: map[digest.Digest][]byte{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if f.fail503 {
		f.mu.Unlock()
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	const prefix = "/v2/team/m/blobs/uploads/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		f.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, prefix)
	if r.Method == http.MethodPost && id == "" {
		f.nextID++
		id = strconv.Itoa(f.nextID)
		f.uploads[id] = nil
		f.posts++
		f.mu.Unlock()
		f.status(w, id, 0, http.StatusAccepted)
		return
	}
	data, ok := f.uploads[id]
	if !ok {
		f.mu.Unlock()
		http.Error(w, `{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	held := int64(len(data))
	state, _ := strconv.ParseInt(r.URL.Query().Get("_state"), 10, 64)
	switch r.Method {
	case http.MethodGet:
		f.statuses++
		after := f.afterGet
		f.mu.Unlock()
		f.status(w, id, held, http.StatusNoContent)
		if after != nil {
			after(id)
		}
	case http.MethodDelete:
		delete(f.uploads, id)
		f.deletes++
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		start, _, _ := strings.Cut(r.Header.Get("Content-Range"), "-")
		if s, _ := strconv.ParseInt(start, 10, 64); s != held || state != held {
			f.refusedPatches++
			f.mu.Unlock()
			http.Error(w, `{"errors":[{"code":"RANGE_INVALID"}]}`, http.StatusRequestedRangeNotSatisfiable)
			return
		}
		f.patches++
		cut := f.cutPatch
		f.cutPatch = 0
		f.mu.Unlock()
		if cut != 0 {
			b, _ := io.ReadAll(io.LimitReader(r.Body, max(cut, 0)))
			f.append(id, b)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		b, err := io.ReadAll(r.Body)
		f.append(id, b)
		if err != nil {
			return
		}
		f.mu.Lock()
		n := int64(len(f.uploads[id]))
		f.mu.Unlock()
		f.status(w, id, n, http.StatusAccepted)
	case http.MethodPut:
		if state != held {
			f.mu.Unlock()
			http.Error(w, `{"errors":[{"code":"RANGE_INVALID"}]}`, http.StatusRequestedRangeNotSatisfiable)
			return
		}
		d := digest.FromBytes(data)
		if r.URL.Query().Get("digest") != d.String() {
			f.mu.Unlock()
			http.Error(w, `{"errors":[{"code":"DIGEST_INVALID"}]}`, http.StatusBadRequest)
			return
		}
		f.blobs[d] = data
		delete(f.uploads, id)
		f.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	default:
		f.mu.Unlock()
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *fakeRegistry) append(id string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.uploads[id]; ok {
		f.uploads[id] = append(f.uploads[id], b...)
	}
}

func (f *fakeRegistry) status(w http.ResponseWriter, id string, n int64, code int) {
	last := max(n-1, 0)
	w.Header().Set("Location", fmt.Sprintf("/v2/team/m/blobs/uploads/%s?_state=%d", id, n))
	w.Header().Set("Range", fmt.Sprintf("0-%d", last))
	w.WriteHeader(code)
}

// only returns the one upload in progress.
func (f *fakeRegistry) only(t *testing.T) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploads) != 1 {
		t.Fatalf("%d uploads in progress, want 1", len(f.uploads))
	}
	for id := range f.uploads {
		return id
	}
	return ""
}

func (f *fakeRegistry) held(id string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.uploads[id]))
}

const (
	testChunk = 64 << 10
	testSize  = 10*testChunk + 1234
)

// interrupted uploads a file whose third PATCH is cut after cut bytes (none
// when negative), as when the client is killed then: the registry keeps
// those bytes and the client's saved state is at the end of the second
// chunk.
func interrupted(t *testing.T, cut int64) (*fakeRegistry, *Streamer, string, []byte) {
	t.Helper()
	f, srv := newFake(t)
	dir := t.TempDir()
	content := make([]byte, testSize)
	rand.New(rand.NewSource(1)).Read(content)
	path := filepath.Join(dir, "model.bin")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Streamer{Client: srv.Client(), Base: srv.URL + "/v2/team/m", StateDir: filepath.Join(dir, "state"), Chunk: testChunk}
	patches := 0
	// Two full chunks, then the cut one.
	s2 := &Streamer{Base: s.Base, StateDir: s.StateDir, Chunk: s.Chunk}
	s2.Client = clientFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPatch {
			patches++
			if patches == 3 {
				f.mu.Lock()
				f.cutPatch = cut
				f.mu.Unlock()
			}
		}
		return srv.Client().Do(r)
	})
	if _, _, err := s2.Upload(context.Background(), path, progress.Discard().Track("", "", 0)); err == nil {
		t.Fatal("the cut upload succeeded")
	}
	if got := f.held(f.only(t)); got != 2*testChunk+max(cut, 0) {
		t.Fatalf("the registry holds %d bytes after the cut, want %d", got, 2*testChunk+max(cut, 0))
	}
	return f, s, path, content
}

type clientFunc func(*http.Request) (*http.Response, error)

func (c clientFunc) Do(r *http.Request) (*http.Response, error) { return c(r) }

func upload(t *testing.T, s *Streamer, path string, content []byte) int64 {
	t.Helper()
	d, sent, err := s.Upload(context.Background(), path, progress.Discard().Track("", "", 0))
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(content); d != want {
		t.Fatalf("digest %s, want %s", d, want)
	}
	return sent
}

// The registry holds part of the chunk in flight when the client died: the
// next run continues from the registry's offset, hashing the bytes between
// its saved offset and the registry's without sending them.
func TestResumeFromRegistryOffsetAhead(t *testing.T) {
	const cut = testChunk/2 + 17
	f, s, path, content := interrupted(t, cut)
	sent := upload(t, s, path, content)
	if want := int64(testSize - 2*testChunk - cut); sent != want {
		t.Errorf("resumed upload sent %d bytes, want %d (the rest after the registry's offset)", sent, want)
	}
	if f.posts != 1 || f.refusedPatches != 0 {
		t.Errorf("%d uploads started, %d PATCHes refused: want 1 and 0", f.posts, f.refusedPatches)
	}
	if len(f.blobs) != 1 {
		t.Errorf("registry has %d blobs, want 1", len(f.blobs))
	}
	if entries, _ := os.ReadDir(s.StateDir); len(entries) != 0 {
		t.Errorf("state left after a finished upload: %v", entries)
	}
}

// The registry has exactly what was acknowledged: continue from there.
func TestResumeFromRegistryOffsetEqual(t *testing.T) {
	f, s, path, content := interrupted(t, -1)
	sent := upload(t, s, path, content)
	if sent != testSize-2*testChunk {
		t.Errorf("resumed upload sent %d bytes, want %d", sent, testSize-2*testChunk)
	}
	if f.posts != 1 {
		t.Errorf("%d uploads started, want 1", f.posts)
	}
}

// The registry holds less than the client saved (it should not happen): the
// upload starts over, cancelling the old one, and the result is exact.
func TestResumeRegistryBehindStartsOver(t *testing.T) {
	f, s, path, content := interrupted(t, 100)
	id := f.only(t)
	f.mu.Lock()
	f.uploads[id] = f.uploads[id][:testChunk] // lost a chunk the client saw acknowledged
	f.mu.Unlock()
	sent := upload(t, s, path, content)
	if sent != testSize {
		t.Errorf("sent %d bytes, want the whole file (%d)", sent, testSize)
	}
	if f.posts != 2 || f.deletes != 1 {
		t.Errorf("%d uploads started, %d cancelled: want 2 and 1", f.posts, f.deletes)
	}
}

// The upload is gone (404: purged, or the registry lost it): start over.
func TestResumeUploadGoneStartsOver(t *testing.T) {
	f, s, path, content := interrupted(t, 100)
	f.mu.Lock()
	clear(f.uploads)
	f.mu.Unlock()
	sent := upload(t, s, path, content)
	if sent != testSize {
		t.Errorf("sent %d bytes, want the whole file (%d)", sent, testSize)
	}
	if f.posts != 2 {
		t.Errorf("%d uploads started, want 2", f.posts)
	}
}

// A registry that cannot answer keeps the state: the error is returned
// (for the caller's retry) and a later run still resumes.
func TestResumeRegistryDownKeepsState(t *testing.T) {
	const cut = 1000
	f, s, path, content := interrupted(t, cut)
	f.mu.Lock()
	f.fail503 = true
	f.mu.Unlock()
	if _, _, err := s.Upload(context.Background(), path, progress.Discard().Track("", "", 0)); err == nil || !remote.Transient(err) {
		t.Fatalf("upload against a 503 registry: err %v, want a retryable error", err)
	}
	f.mu.Lock()
	f.fail503 = false
	f.mu.Unlock()
	if sent := upload(t, s, path, content); sent != testSize-2*testChunk-cut {
		t.Errorf("sent %d bytes after the registry came back, want %d", sent, testSize-2*testChunk-cut)
	}
}

// The registry's offset moves after the client asked (the killed client's
// last PATCH was still being written): the PATCH is refused with 416, the
// client asks again, catches its hash up and continues.
func TestResumeOffsetMovedAfterStatus(t *testing.T) {
	const cut = 5000
	f, s, path, content := interrupted(t, cut)
	late := int64(3000)
	once := sync.Once{}
	f.afterGet = func(id string) {
		once.Do(func() {
			at := f.held(id)
			f.append(id, content[at:at+late])
		})
	}
	sent := upload(t, s, path, content)
	if want := testSize - 2*testChunk - cut - late; sent != want {
		t.Errorf("sent %d bytes, want %d", sent, want)
	}
	if f.refusedPatches != 1 {
		t.Errorf("%d PATCHes refused, want 1", f.refusedPatches)
	}
}

// The registry's offset moves back after the client asked (it lost bytes):
// the refused PATCH leads to a fresh upload, not a loop or a corrupt blob.
func TestResumeOffsetMovedBackStartsOver(t *testing.T) {
	f, s, path, content := interrupted(t, 5000)
	once := sync.Once{}
	f.afterGet = func(id string) {
		once.Do(func() {
			f.mu.Lock()
			f.uploads[id] = f.uploads[id][:testChunk]
			f.mu.Unlock()
		})
	}
	if sent := upload(t, s, path, content); sent != testSize {
		t.Errorf("sent %d bytes, want the whole file (%d)", sent, testSize)
	}
	if f.refusedPatches != 1 || f.posts != 2 || f.deletes != 1 {
		t.Errorf("%d PATCHes refused, %d uploads started, %d cancelled: want 1, 2, 1", f.refusedPatches, f.posts, f.deletes)
	}
}

// Everything arrived but the PUT: the next run only finishes.
func TestResumeAllBytesHeld(t *testing.T) {
	f, s, path, content := interrupted(t, 100)
	id := f.only(t)
	f.mu.Lock()
	f.uploads[id] = append([]byte(nil), content...)
	f.mu.Unlock()
	if sent := upload(t, s, path, content); sent != 0 {
		t.Errorf("sent %d bytes, want 0", sent)
	}
}

// A saved hash state that cannot be read does not discard the upload: the
// client hashes the file up to the registry's offset.
func TestResumeUnreadableHashState(t *testing.T) {
	const cut = 777
	_, s, path, content := interrupted(t, cut)
	entries, err := os.ReadDir(s.StateDir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("state files: %v %v", entries, err)
	}
	p := filepath.Join(s.StateDir, entries[0].Name())
	b, _ := os.ReadFile(p)
	b = bytes.Replace(b, []byte(`"hash":"`), []byte(`"hash":"AAAA`), 1)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if sent := upload(t, s, path, content); sent != testSize-2*testChunk-cut {
		t.Errorf("sent %d bytes, want %d", sent, testSize-2*testChunk-cut)
	}
}

func TestUploadedBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int64
		ok   bool
		name string
	}{
		{"0-0", 0, true, "empty (or one byte)"},
		{"0-99", 100, true, "100 bytes"},
		{"bytes=0-99", 100, true, "with unit"},
		{"", 0, false, "missing"},
		{"5-99", 0, false, "not from 0"},
		{"0-x", 0, false, "garbage"},
		{"0--3", 0, false, "negative"},
	} {
		if n, ok := uploadedBytes(c.in); n != c.n || ok != c.ok {
			t.Errorf("%s: uploadedBytes(%q) = %d, %v; want %d, %v", c.name, c.in, n, ok, c.n, c.ok)
		}
	}
}
