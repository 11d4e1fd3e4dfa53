package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Streamer uploads a file in one read: it hashes while it sends, with the
// distribution spec's chunked upload (POST, PATCH with Content-Range, PUT
// with the digest computed on the way). After each acknowledged chunk it
// saves where it is (upload URL, offset, hash state) under StateDir, so an
// upload killed half-way resumes on the next run instead of starting over.
// It resumes from the offset the registry reports, not the saved one: a
// client killed during a PATCH leaves the registry holding part of the chunk
// in flight, past the last acknowledged offset.
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

	fastest speedMeter
}

// FastestConnection is the highest rate one PATCH reached, in bytes per
// second (0 before any of 8 MiB or more): what one connection to the
// registry carries.
func (s *Streamer) FastestConnection() float64 { return s.fastest.rate() }

// uploadState is what a resumable upload saves after each chunk.
type uploadState struct {
	Location string `json:"location"`
	Offset   int64  `json:"offset"`
	Hash     []byte `json:"hash"` // sha256 state at Offset, encoding.BinaryMarshaler
}

// statePath names one file's upload to one repository, invalidated when the
// file changes (size or modification time).
func (s *Streamer) statePath(path string, info os.FileInfo) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", s.Base, path, info.Size(), info.ModTime().UnixNano()))
	return filepath.Join(s.StateDir, fmt.Sprintf("%x.json", sum[:12]))
}

// maxResyncs bounds how often one Upload re-reads the registry's offset
// after a PATCH refused with 416 (the registry's offset moved, e.g. a
// killed client's last PATCH was still being written when this one began).
const maxResyncs = 3

// Upload sends the file at path and returns its digest and the bytes sent
// in this call (less than the size when an earlier upload resumed).
func (s *Streamer) Upload(ctx context.Context, path string, t progress.Tracker) (digest.Digest, int64, error) {
	ctx = pushScope(ctx, s.Base)
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
	size := info.Size()
	h := sha256.New()
	var st uploadState
	statePath := ""
	if s.StateDir != "" {
		abs, _ := filepath.Abs(path)
		statePath = s.statePath(abs, info)
		ok, err := s.resume(ctx, f, size, statePath, &st, h)
		if err != nil {
			return "", 0, err // the registry did not answer: keep the state for the next attempt
		}
		if ok {
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
	if st.Hash, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
		return "", 0, err
	}
	var sent int64
	resyncs := 0
	for st.Offset < size {
		n := min(chunk, size-st.Offset)
		body := io.TeeReader(progress.Reader(ctxReader{ctx, io.NewSectionReader(f, st.Offset, n)}, t), h)
		began := time.Now()
		loc, err := s.patch(ctx, st.Location, st.Offset, n, body)
		if err == nil {
			s.fastest.record(n, time.Since(began))
		}
		if err != nil {
			var e *errcode.ErrorResponse
			if !errors.As(err, &e) || e.StatusCode != http.StatusRequestedRangeNotSatisfiable || resyncs >= maxResyncs {
				return "", sent, err
			}
			// The registry is not where this client thought: ask it again.
			resyncs++
			if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
				return "", sent, err
			}
			ok, err := s.sync(ctx, f, size, &st, h)
			if err != nil {
				return "", sent, err
			}
			if !ok { // start over
				if statePath != "" {
					os.Remove(statePath)
				}
				s.cancel(ctx, st.Location)
				h.Reset()
				st = uploadState{}
				if st.Location, err = s.start(ctx); err != nil {
					return "", sent, err
				}
				st.Hash, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
			}
			continue
		}
		st.Location, st.Offset = loc, st.Offset+n
		sent += n
		if st.Hash, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
			return "", sent, err
		}
		if statePath != "" {
			saveState(statePath, st)
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

// resume loads the saved state and brings it to the offset the registry
// reports for the upload (see sync). It returns false, having removed the
// state and cancelled the registry's upload, when the upload cannot be
// continued and must start over; it returns an error only when the registry
// could not be asked, so the state is kept for a later attempt.
func (s *Streamer) resume(ctx context.Context, f io.ReaderAt, size int64, statePath string, st *uploadState, h hash.Hash) (bool, error) {
	b, err := os.ReadFile(statePath)
	if err != nil {
		return false, nil
	}
	if json.Unmarshal(b, st) != nil || st.Location == "" || st.Offset < 0 || st.Offset > size {
		os.Remove(statePath)
		return false, nil
	}
	if h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash) != nil {
		// The hash state is unusable, the upload may not be: hash from the start.
		st.Offset = 0
		h.Reset()
	}
	ok, err := s.sync(ctx, f, size, st, h)
	if err != nil {
		return false, err
	}
	if !ok {
		os.Remove(statePath)
		s.cancel(ctx, st.Location)
	}
	return ok, nil
}

// sync asks the registry where the upload at st.Location stands (GET:
// 204 with Range: 0-<last byte received>) and moves st and h, which hold
// the hash of the file's first st.Offset bytes, to the registry's offset
// by reading the bytes in between from f (hashed, not sent). The registry
// may be ahead of st.Offset: a PATCH cut off by a kill leaves the bytes it
// delivered. It returns false when the upload cannot continue (unknown to
// the registry, behind st.Offset, past the file's end, or an answer it
// cannot read) and an error when the registry could not be asked.
func (s *Streamer) sync(ctx context.Context, f io.ReaderAt, size int64, st *uploadState, h hash.Hash) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.abs(st.Location), nil)
	if err != nil {
		return false, nil
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return false, httpError(resp)
	case resp.StatusCode != http.StatusNoContent:
		return false, nil // 404: the upload is gone (finished, cancelled or purged)
	}
	server, ok := uploadedBytes(resp.Header.Get("Range"))
	if !ok || server < st.Offset || server > size {
		return false, nil
	}
	if server > st.Offset {
		n, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(f, st.Offset, server-st.Offset)})
		if err != nil {
			return false, err
		}
		if n != server-st.Offset {
			return false, nil
		}
		st.Offset = server
		if st.Hash, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
			return false, err
		}
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		// distribution's Location carries a signed token with the offset;
		// the next PATCH must use the one issued for this offset.
		st.Location = loc
	}
	return true, nil
}

// uploadedBytes reads the bytes an upload holds from its status's Range
// header, "0-<last byte>". "0-0" is what distribution answers both for an
// empty upload and for one byte; it reads as 0, which at worst sends one
// byte again.
func uploadedBytes(r string) (int64, bool) {
	first, last, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(r), "bytes="), "-")
	if !ok || first != "0" {
		return 0, false
	}
	n, err := strconv.ParseInt(last, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	if n == 0 {
		return 0, true
	}
	return n + 1, true
}

// cancel deletes an upload that will not be continued, so the registry
// does not keep its bytes until it purges them; failures are ignored.
func (s *Streamer) cancel(ctx context.Context, loc string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.abs(loc), nil)
	if err != nil {
		return
	}
	if resp, err := s.Client.Do(req); err == nil {
		resp.Body.Close()
	}
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

// pushScope names, for an authenticating client (oras-go's auth.Client),
// the token scope of an upload to the repository at base
// (http(s)://HOST/v2/REPO): a token fetched for it by the first request
// (which has no body) serves the ones with bodies, which could not be
// sent again after a 401.
func pushScope(ctx context.Context, base string) context.Context {
	u, err := url.Parse(base)
	if err != nil {
		return ctx
	}
	repo, ok := strings.CutPrefix(u.Path, "/v2/")
	if !ok || repo == "" {
		return ctx
	}
	return auth.AppendRepositoryScope(ctx, registry.Reference{Registry: u.Host, Repository: strings.TrimSuffix(repo, "/")}, auth.ActionPull, auth.ActionPush)
}
