package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Streamer uploads a file in one read: it hashes while it sends, with the
// distribution spec's chunked upload (POST, PATCH with Content-Range, PUT
// with the digest computed on the way). After each acknowledged chunk it
// saves where it is (upload URL, offset, hash state) under StateDir, so an
// upload killed half-way resumes from the last acknowledged offset on the
// next run instead of starting over.
type Streamer struct {
	// Client sends the requests (authenticating, e.g. oras-go's auth.Client).
	Client interface {
		Do(*http.Request) (*http.Response, error)
	}
	// Base is the repository's API root: http(s)://HOST/v2/REPO.
	Base string
	// StateDir keeps resumable upload state; empty disables resuming.
	StateDir string
	// Chunk is the bytes per PATCH; 0 means 256 MiB.
	Chunk int64
}

// uploadState is what a resumable upload saves after each chunk.
type uploadState struct {
	Location string `json:"location"`
	Offset   int64  `json:"offset"`
	Hash     []byte `json:"hash"` // sha256 state, encoding.BinaryMarshaler
}

// stateKey names one file's upload to one repository, invalidated when the
// file changes (size or modification time).
func (s *Streamer) statePath(path string, info os.FileInfo) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", s.Base, path, info.Size(), info.ModTime().UnixNano()))
	return filepath.Join(s.StateDir, fmt.Sprintf("%x.json", sum[:12]))
}

// Upload sends the file at path and returns its digest and the bytes sent
// in this call (less than the size when an earlier upload resumed).
func (s *Streamer) Upload(ctx context.Context, path string, t progress.Tracker) (digest.Digest, int64, error) {
	chunk := s.Chunk
	if chunk <= 0 {
		chunk = 256 << 20
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	var st uploadState
	statePath := ""
	if s.StateDir != "" {
		abs, _ := filepath.Abs(path)
		statePath = s.statePath(abs, info)
		if s.resume(ctx, statePath, &st, h) {
			if _, err := f.Seek(st.Offset, io.SeekStart); err != nil {
				return "", 0, err
			}
			t.Add(int(st.Offset))
		} else {
			st = uploadState{}
			h.Reset()
		}
	}
	if st.Location == "" {
		if st.Location, err = s.start(ctx); err != nil {
			return "", 0, err
		}
	}
	var sent int64
	for st.Offset < info.Size() {
		n := min(chunk, info.Size()-st.Offset)
		body := io.TeeReader(progress.Reader(io.LimitReader(ctxReader{ctx, f}, n), t), h)
		loc, err := s.patch(ctx, st.Location, st.Offset, n, body)
		if err != nil {
			return "", sent, err
		}
		st.Location, st.Offset = loc, st.Offset+n
		sent += n
		if statePath != "" {
			if hs, err := h.(encoding.BinaryMarshaler).MarshalBinary(); err == nil {
				st.Hash = hs
				saveState(statePath, st)
			}
		}
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := s.finish(ctx, st.Location, d); err != nil {
		return "", sent, err
	}
	if statePath != "" {
		os.Remove(statePath)
	}
	return d, sent, nil
}

// resume loads saved state and checks with the registry that the upload
// is still there at the saved offset.
func (s *Streamer) resume(ctx context.Context, statePath string, st *uploadState, h hash.Hash) bool {
	b, err := os.ReadFile(statePath)
	if err != nil || json.Unmarshal(b, st) != nil || st.Location == "" {
		return false
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
		return false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.abs(st.Location), nil)
	if err != nil {
		return false
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return false
	}
	// Range: 0-<last byte received>
	_, end, ok := strings.Cut(resp.Header.Get("Range"), "-")
	last, err := strconv.ParseInt(end, 10, 64)
	if !ok || err != nil || last+1 != st.Offset {
		return false
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		st.Location = loc
	}
	return true
}

func saveState(path string, st uploadState) {
	b, _ := json.Marshal(st)
	os.MkdirAll(filepath.Dir(path), 0o700)
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, path)
	}
}

func (s *Streamer) abs(loc string) string {
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return loc
	}
	u, err := url.Parse(s.Base)
	if err != nil {
		return loc
	}
	return u.Scheme + "://" + u.Host + loc
}

func (s *Streamer) start(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Base+"/blobs/uploads/", nil)
	if err != nil {
		return "", err
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", httpError(resp)
	}
	return resp.Header.Get("Location"), nil
}

func (s *Streamer) patch(ctx context.Context, loc string, offset, n int64, body io.Reader) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, s.abs(loc), io.NopCloser(body))
	if err != nil {
		return "", err
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+n-1))
	resp, err := s.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", httpError(resp)
	}
	return resp.Header.Get("Location"), nil
}

func (s *Streamer) finish(ctx context.Context, loc string, d digest.Digest) error {
	u, err := url.Parse(s.abs(loc))
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), http.NoBody)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := s.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return httpError(resp)
	}
	return nil
}

// httpError turns a registry error answer into oras-go's error type, so the
// retry and explanation logic treats both paths alike.
func httpError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode}
	var wrapped struct{ Errors errcode.Errors }
	if json.Unmarshal(body, &wrapped) == nil {
		e.Errors = wrapped.Errors
	} else if len(bytes.TrimSpace(body)) > 0 {
		e.Errors = errcode.Errors{{Code: "UNKNOWN", Message: strings.TrimSpace(string(body))}}
	}
	return e
}
