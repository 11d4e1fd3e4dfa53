package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// The defaults of a ranged pull (docs/transfer.md, "Ranged pull").
const (
	// DefaultRangeConnections is how many Range requests, each over its
	// own connection, fetch one large raw layer. Over links that cap each
	// connection (object stores, CDNs), 4, 8 and 16 connections were
	// measured 4.0x, 7.7x and 11.8x faster than one; 8 takes most of the
	// gain without opening dozens of connections per pull (Concurrency
	// files may be fetched in ranges at once).
	DefaultRangeConnections = 8
	// DefaultRangeThreshold (64 MiB) is the smallest raw layer fetched in
	// ranges: below it, the extra requests cost more than one stream.
	DefaultRangeThreshold int64 = 64 << 20
)

// errNoRanges means the registry did not answer a Range request with a
// 206 and the Content-Range asked for: the blob is fetched in one stream.
var errNoRanges = errors.New("the registry does not serve byte ranges")

// blobSource is what a ranged fetch needs from a registry: the HTTP client
// of its repository and the repository's reference, to build blob URLs.
// Only a remote repository has them; any other target (an OCI layout) is
// read in one stream.
type blobSource struct {
	client    orasremote.Client
	ref       registry.Reference
	plainHTTP bool
}

// newBlobSource returns the blob source of target, or nil when it is not
// a remote repository, or is one on loopback and ranges were not asked
// for: no link caps a connection there, and verifying the assembled file
// costs one more read (docs/transfer.md, "Ranged pull").
func newBlobSource(target oras.ReadOnlyTarget, asked bool) *blobSource {
	r, ok := target.(*orasremote.Repository)
	if !ok || !asked && remote.IsLocalhost(r.Reference.Registry) {
		return nil
	}
	c := r.Client
	if c == nil {
		c = auth.DefaultClient
	}
	return &blobSource{client: c, ref: r.Reference, plainHTTP: r.PlainHTTP}
}

// url is SCHEME://HOST/v2/REPO/blobs/DIGEST.
func (s *blobSource) url(d string) string {
	scheme := "https"
	if s.plainHTTP {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, s.ref.Host(), s.ref.Repository, d)
}

// byteRange is one part of a blob, end inclusive; next is the first byte
// not yet written, so a retry asks only for the rest.
type byteRange struct {
	start, end, next int64
}

// splitRanges cuts size bytes into n ranges of nearly equal size.
func splitRanges(size int64, n int) []*byteRange {
	n = int(min(int64(n), size))
	out := make([]*byteRange, n)
	for i := range n {
		s, e := size*int64(i)/int64(n), size*int64(i+1)/int64(n)-1
		out[i] = &byteRange{start: s, end: e, next: s}
	}
	return out
}

// rangeable reports whether layer f is fetched in ranges.
func (p *puller) rangeable(f model.FileEntry) bool {
	return p.blobs != nil && p.opts.RangeConnections > 1 && f.Encoding == mediatypes.EncodingRaw &&
		f.Descriptor.Size >= p.opts.RangeThreshold && f.Descriptor.Size > 1
}

// get asks for bytes r.next..r.end of url. It returns the response when the
// registry answered 200 or 206 (the caller checks which), and an error built
// from any other answer.
func (s *blobSource) get(ctx context.Context, url string, r *byteRange) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r.next, r.end))
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer resp.Body.Close()
		return nil, httpError(resp)
	}
	return resp, nil
}

// isRange reports whether resp is the 206 answer to r.next..r.end of a
// blob of size bytes.
func isRange(resp *http.Response, r *byteRange, size int64) bool {
	if resp.StatusCode != http.StatusPartialContent {
		return false
	}
	spec, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes ")
	if !ok {
		return false
	}
	span, total, ok := strings.Cut(spec, "/")
	first, last, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return false
	}
	s, err1 := strconv.ParseInt(first, 10, 64)
	e, err2 := strconv.ParseInt(last, 10, 64)
	t, err3 := strconv.ParseInt(total, 10, 64)
	return err1 == nil && err2 == nil && err3 == nil && s == r.next && e == r.end && t == size
}

// pullRanged fetches raw layer f as ranges over separate connections, each
// written in place into its file, then verifies the whole file's digest by
// reading it back. The first range is asked for alone: its answer tells
// whether the registry serves ranges, and where (the URL after any
// redirect, to object storage for instance), which the other ranges then
// use. Each range is retried alone under opts.Retry, from its first byte
// not yet written.
//
// It returns (nil, nil) when the file is written and verified; the body of
// the registry's 200 answer when it ignored the Range header (the caller
// reads the blob from it in one stream); errNoRanges when the answer was a
// 206 without the Content-Range asked for.
func (p *puller) pullRanged(ctx context.Context, f model.FileEntry, t progress.Tracker) (io.ReadCloser, error) {
	desc := f.Descriptor
	ref := p.blobs.ref
	ref.Reference = desc.Digest.String()
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)

	ranges := splitRanges(desc.Size, p.opts.RangeConnections)
	var probe *http.Response
	err := p.opts.Retry.Do(ctx, func(ctx context.Context) error {
		resp, err := p.blobs.get(ctx, p.blobs.url(desc.Digest.String()), ranges[0])
		probe = resp
		return err
	})
	if err != nil {
		return nil, err
	}
	if probe.StatusCode == http.StatusOK {
		return probe.Body, nil
	}
	if !isRange(probe, ranges[0], desc.Size) {
		probe.Body.Close()
		return nil, errNoRanges
	}
	final := probe.Request.URL.String() // after redirects

	name := filepath.FromSlash(f.Path)
	if d := filepath.Dir(name); d != "." {
		if err := p.root.MkdirAll(d, 0o755); err != nil {
			probe.Body.Close()
			return nil, err
		}
	}
	fh, err := p.root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		probe.Body.Close()
		return nil, err
	}
	defer fh.Close()
	if err := fh.Truncate(desc.Size); err != nil {
		probe.Body.Close()
		return nil, err
	}

	g, gctx := errgroup.WithContext(ctx)
	for i, r := range ranges {
		var first *http.Response
		if i == 0 {
			first = probe
		}
		g.Go(func() error {
			return p.opts.Retry.Do(gctx, func(ctx context.Context) error {
				resp := first
				first = nil
				if resp == nil {
					var err error
					if resp, err = p.blobs.get(ctx, final, r); err != nil {
						return err
					}
					if !isRange(resp, r, desc.Size) {
						resp.Body.Close()
						return fmt.Errorf("GET %s: asked for bytes %d-%d, got %s %q: the registry stopped serving ranges", final, r.next, r.end, resp.Status, resp.Header.Get("Content-Range"))
					}
				}
				defer resp.Body.Close()
				// The first answer was asked for outside gctx: stop
				// reading it when another range fails.
				defer context.AfterFunc(gctx, func() { resp.Body.Close() })()
				return writeRange(gctx, fh, resp.Body, r, t)
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// The whole blob's digest: one read of the assembled file, from the
	// page cache (docs/transfer.md, "Ranged pull", for the measurement).
	vr := content.NewVerifyReader(io.NewSectionReader(fh, 0, desc.Size), desc)
	if _, err := io.CopyBuffer(io.Discard, vr, make([]byte, 1<<20)); err != nil {
		return nil, err
	}
	if err := verifyErr(vr.Verify(), desc); err != nil {
		return nil, err
	}
	if err := fh.Close(); err != nil {
		return nil, err
	}
	return nil, p.root.Chmod(name, f.Mode.Perm())
}

// writeRange writes body, bytes r.next..r.end of the blob, at their offset
// in fh, moving r.next past what is written; a body cut short is
// io.ErrUnexpectedEOF (transient: the retry asks for the rest).
func writeRange(ctx context.Context, fh *os.File, body io.Reader, r *byteRange, t progress.Tracker) error {
	buf := make([]byte, 1<<20)
	for r.next <= r.end {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := body.Read(buf[:min(int64(len(buf)), r.end+1-r.next)])
		if n > 0 {
			if _, werr := fh.WriteAt(buf[:n], r.next); werr != nil {
				return werr
			}
			r.next += int64(n)
			t.Add(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if r.next <= r.end {
		return io.ErrUnexpectedEOF
	}
	return nil
}
