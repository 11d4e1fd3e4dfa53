package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/opencontainers/distribution-spec/specs-go/v1/extensions"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// PartUploader sends one large file as parts over several connections at
// once, to a registry serving the uploads-in-parts extension (modelreg
// serve; docs/api.md). A link that caps each connection (object stores,
// proxies, long round trips) caps the OCI chunked upload, which must send
// a blob's bytes in order over one connection. Every part request that
// ends, whole or cut short, leaves its bytes on the server, so an upload
// killed half-way resumes with what is missing, down to the byte.
type PartUploader struct {
	// Client sends the requests (authenticating, e.g. oras-go's auth.Client).
	Client interface {
		Do(*http.Request) (*http.Response, error)
	}
	// Registry is the registry's root, http(s)://HOST.
	Registry string
	// Repository is the repository the blob is uploaded to.
	Repository string
	// StateDir keeps each upload's location, so a later run resumes it;
	// empty disables resuming.
	StateDir string
	// Connections is how many parts are sent at once.
	Connections int
	// Threshold is the smallest file sent in parts; smaller ones go the
	// usual way.
	Threshold int64
	// PartSize is the bytes per part; 0 picks one from the file's size
	// (partSizeFor).
	PartSize int64

	fastest speedMeter
}

// FastestConnection is the highest rate one part request reached, in
// bytes per second (0 before any part of 8 MiB or more): what one
// connection to the registry can carry, which decides whether the next
// push needs parts at all.
func (p *PartUploader) FastestConnection() float64 { return p.fastest.rate() }

// speedMeter keeps the highest rate of the requests it is told of that
// carried 8 MiB or more (smaller ones measure the round trip, not the link).
type speedMeter struct{ bits atomic.Uint64 }

func (m *speedMeter) record(n int64, d time.Duration) {
	if n < 8<<20 || d <= 0 {
		return
	}
	r := float64(n) / d.Seconds()
	for {
		old := m.bits.Load()
		if r <= math.Float64frombits(old) || m.bits.CompareAndSwap(old, math.Float64bits(r)) {
			return
		}
	}
}

func (m *speedMeter) rate() float64 { return math.Float64frombits(m.bits.Load()) }

// DefaultPartThreshold is the smallest file sent in parts by default: the
// same size from which a pull fetches ranges.
const DefaultPartThreshold = DefaultRangeThreshold

// partSizeFor picks parts small enough that connections stay busy to the
// end and a killed upload loses little (about a quarter of a part per
// connection), and large enough that a round trip per part is noise: four
// parts per connection, between 8 and 256 MiB, in whole MiB.
func partSizeFor(size int64, connections int) int64 {
	p := size / int64(4*max(connections, 1))
	p = min(max(p, 8<<20), 256<<20)
	return (p + 1<<20 - 1) &^ (1<<20 - 1)
}

// SupportsParts asks a registry's discover document (/v2/_oci/ext/discover)
// whether it serves uploads in parts. Any failure is a no: the upload then
// takes the standard route.
func SupportsParts(ctx context.Context, client interface {
	Do(*http.Request) (*http.Response, error)
}, registryURL string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, registryURL+"/v2/_oci/ext/discover", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var list extensions.ExtensionList
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list) != nil {
		return false
	}
	for _, e := range list.Extensions {
		if slices.Contains(e.Endpoints, PartsEndpoint) {
			return true
		}
	}
	return false
}

// PartsEndpoint is how the discover document (/v2/_oci/ext/discover)
// names the uploads-in-parts extension, and its path under /v2/: a client
// that finds it may send one blob over several connections (docs/api.md,
// "Uploads in parts").
const PartsEndpoint = "_modelreg/v1/models/{name}/uploads"

// PartsRequest opens an upload in parts: the blob's size and, optionally,
// the part size the client wants (the server picks one when it is 0).
type PartsRequest struct {
	Size     int64 `json:"size"`
	PartSize int64 `json:"partSize,omitempty"`
}

// PartsUpload is an upload in parts as the server holds it: every part is
// PartSize bytes but the last, and Held says how many bytes of each part
// have arrived, so a client that died mid-part sends only the rest.
type PartsUpload struct {
	ID       string  `json:"id"`
	Size     int64   `json:"size"`
	PartSize int64   `json:"partSize"`
	Parts    int     `json:"parts"`
	Held     []int64 `json:"held"`
}

// PartsMissing is the detail of a BLOB_UPLOAD_INVALID answer to a
// completion sent before every part arrived.
type PartsMissing struct {
	Missing []int `json:"missing"`
}

// partState is what a resumable upload in parts keeps on the client.
type partState struct {
	Location string `json:"location"`
}

// Upload sends the file at path in parts and returns its digest and the
// bytes sent in this call. known is the file's digest when already known;
// otherwise the file is hashed in a read of its own, beside the parts.
func (p *PartUploader) Upload(ctx context.Context, path string, known digest.Digest, t progress.Tracker) (digest.Digest, int64, error) {
	ctx = pushScope(ctx, strings.TrimSuffix(p.Registry, "/")+"/v2/"+p.Repository)
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type hashed struct {
		d   digest.Digest
		err error
	}
	hc := make(chan hashed, 1)
	if known != "" {
		hc <- hashed{d: known}
	} else {
		go func() {
			h := sha256.New()
			n, err := io.CopyBuffer(h, ctxReader{ctx, io.NewSectionReader(f, 0, size)}, make([]byte, 1<<20))
			if err == nil && n != size {
				err = fmt.Errorf("%s changed size while it was being read; push again once it is complete", path)
			}
			hc <- hashed{digest.NewDigest(digest.SHA256, h), err}
		}()
	}

	statePath := ""
	if p.StateDir != "" {
		abs, _ := filepath.Abs(path)
		sum := sha256.Sum256(fmt.Appendf(nil, "parts\x00%s/%s\x00%s\x00%d\x00%d", p.Registry, p.Repository, abs, size, info.ModTime().UnixNano()))
		statePath = filepath.Join(p.StateDir, fmt.Sprintf("%x.json", sum[:12]))
	}
	up, loc, err := p.resume(ctx, statePath, size)
	if err != nil {
		return "", 0, err
	}
	if up == nil {
		if up, loc, err = p.create(ctx, size); err != nil {
			return "", 0, err
		}
		if statePath != "" {
			b, _ := json.Marshal(partState{Location: loc})
			writeFileAtomic(statePath, b)
		}
	}
	var held int64
	for _, h := range up.Held {
		held += h
	}
	t.Add(int(held))

	var sent atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(p.Connections, 1))
	for n, h := range up.Held {
		want := min(up.PartSize, up.Size-int64(n)*up.PartSize)
		if h >= want {
			continue
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another part failed: send no more
			}
			c, err := p.sendPart(gctx, loc, n, h, want, up.PartSize, f, t)
			sent.Add(c)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return "", sent.Load(), err // the state is kept: the next attempt sends what is missing
	}
	res := <-hc
	if res.err != nil {
		return "", sent.Load(), res.err
	}
	if known != "" && res.d != known {
		return "", sent.Load(), fmt.Errorf("%s changed while it was being pushed; push again once it is complete", path)
	}
	if err := p.complete(ctx, loc, res.d); err != nil {
		var e *httpStatusError
		if errors.As(err, &e) && e.status == http.StatusBadRequest {
			// A digest the parts do not make: the server discarded them.
			if statePath != "" {
				os.Remove(statePath)
			}
			if known != "" {
				return "", sent.Load(), fmt.Errorf("%s changed while it was being pushed (it no longer has the digest it was hashed to); push again once it is complete", path)
			}
		}
		return "", sent.Load(), err
	}
	if statePath != "" {
		os.Remove(statePath)
	}
	return res.d, sent.Load(), nil
}

// resume reads a saved upload and asks the server what it holds of it; nil
// (and the saved state removed) when there is nothing to resume.
func (p *PartUploader) resume(ctx context.Context, statePath string, size int64) (*PartsUpload, string, error) {
	if statePath == "" {
		return nil, "", nil
	}
	b, err := os.ReadFile(statePath)
	var st partState
	if err != nil || json.Unmarshal(b, &st) != nil || st.Location == "" {
		return nil, "", nil
	}
	var up PartsUpload
	status, err := p.do(ctx, http.MethodGet, st.Location, nil, &up)
	switch {
	case err != nil && status >= 500:
		return nil, "", err // the server did not answer: keep the state for a later attempt
	case err != nil || up.Size != size || len(up.Held) != up.Parts || up.PartSize <= 0:
		os.Remove(statePath)
		return nil, "", nil
	}
	return &up, st.Location, nil
}

func (p *PartUploader) create(ctx context.Context, size int64) (*PartsUpload, string, error) {
	part := p.PartSize
	if part <= 0 {
		part = partSizeFor(size, p.Connections)
	}
	body, _ := json.Marshal(PartsRequest{Size: size, PartSize: part})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Registry+"/v2/"+strings.ReplaceAll(PartsEndpoint, "{name}", p.Repository), bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.Client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, "", httpError(resp)
	}
	var up PartsUpload
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&up); err != nil {
		return nil, "", fmt.Errorf("the registry's answer to an upload in parts: %w", err)
	}
	loc := resp.Header.Get("Location")
	if loc == "" || up.Size != size || len(up.Held) != up.Parts || up.PartSize <= 0 {
		return nil, "", errors.New("the registry's answer to an upload in parts is incomplete")
	}
	return &up, loc, nil
}

// maxBusyWait bounds how long a part waits for another request writing it
// (a killed client's, read by the server until its connection drops).
const maxBusyWait = 2 * time.Minute

// sendPart sends part n from byte from. While the server answers that
// another request is writing the part (409 PART_BUSY), it waits; then, or
// when the server holds another length of the part than from (416: that
// request ended after this client asked), it asks what the server holds
// of the part and continues from there.
func (p *PartUploader) sendPart(ctx context.Context, loc string, n int, from, want, partSize int64, f io.ReaderAt, t progress.Tracker) (int64, error) {
	var total int64
	wait := 250 * time.Millisecond
	deadline := time.Now().Add(maxBusyWait)
	for {
		c, err := p.putPart(ctx, loc, n, from, want, io.NewSectionReader(f, int64(n)*partSize+from, want-from), t)
		total += c
		var e *errcode.ErrorResponse
		if err == nil || !errors.As(err, &e) || time.Now().After(deadline) {
			return total, err
		}
		switch e.StatusCode {
		case http.StatusConflict:
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return total, ctx.Err()
			}
			wait = min(2*wait, 2*time.Second)
		case http.StatusRequestedRangeNotSatisfiable:
		default:
			return total, err
		}
		var up PartsUpload
		if _, err := p.do(ctx, http.MethodGet, loc, nil, &up); err != nil {
			return total, err
		}
		if n >= len(up.Held) {
			return total, fmt.Errorf("the registry's upload has %d parts, not %d", len(up.Held), n+1)
		}
		from = up.Held[n]
		if from >= want {
			return total, nil
		}
	}
}

// putPart sends bytes [from, want) of part n and returns how many went
// over the wire.
func (p *PartUploader) putPart(ctx context.Context, loc string, n int, from, want int64, body io.Reader, t progress.Tracker) (int64, error) {
	var sent atomic.Int64
	counted := progress.Reader(ctxReader{ctx, io.TeeReader(body, countWriter{&sent})}, t)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.abs(fmt.Sprintf("%s/parts/%d", loc, n)), io.NopCloser(counted))
	if err != nil {
		return 0, err
	}
	req.ContentLength = want - from
	req.Header.Set("Content-Type", "application/octet-stream")
	// The body waits for the server's 100 Continue: a part refused (busy,
	// already held, another offset) costs a round trip, not its bytes.
	req.Header.Set("Expect", "100-continue")
	if from > 0 {
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", from, want-1))
	}
	start := time.Now()
	resp, err := p.Client.Do(req)
	if err != nil {
		return sent.Load(), err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return sent.Load(), httpError(resp)
	}
	p.fastest.record(want-from, time.Since(start))
	return sent.Load(), nil
}

// complete asks the server to assemble the blob. A completion whose answer
// was lost is retried against an upload that is gone: the blob then
// exists, which is success.
func (p *PartUploader) complete(ctx context.Context, loc string, d digest.Digest) error {
	status, err := p.do(ctx, http.MethodPut, loc+"?digest="+d.String(), nil, nil)
	if err == nil {
		if status != http.StatusCreated {
			return fmt.Errorf("completing an upload in parts: %d from the registry", status)
		}
		return nil
	}
	if status == http.StatusNotFound {
		if s, herr := p.do(ctx, http.MethodHead, "/v2/"+p.Repository+"/blobs/"+d.String(), nil, nil); herr == nil && s == http.StatusOK {
			return nil
		}
	}
	if status == http.StatusBadRequest {
		return &httpStatusError{status, err}
	}
	return err
}

// httpStatusError keeps the status of an answer beside its error.
type httpStatusError struct {
	status int
	err    error
}

func (e *httpStatusError) Error() string { return e.err.Error() }
func (e *httpStatusError) Unwrap() error { return e.err }

// do sends a request without a body and decodes a JSON answer into out;
// a status of 300 or more is an error (with the status).
func (p *PartUploader) do(ctx context.Context, method, loc string, body io.Reader, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.abs(loc), body)
	if err != nil {
		return 0, err
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return resp.StatusCode, httpError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

func (p *PartUploader) abs(loc string) string {
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return loc
	}
	return p.Registry + loc
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(b []byte) (int, error) { c.n.Add(int64(len(b))); return len(b), nil }

func writeFileAtomic(path string, b []byte) {
	os.MkdirAll(filepath.Dir(path), 0o700)
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, path)
	}
}
