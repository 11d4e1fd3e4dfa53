package client

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/weights"
	"oras.land/oras-go/v2/registry"
)

// weightsOf reads the headers of the version's safetensors and GGUF files
// from the registry with Range requests (a few KiB to a few MiB of each,
// never the weights), on any registry. nil when the version has none; a
// file whose header does not parse adds nothing.
func (c *Client) weightsOf(ctx context.Context, r registry.Reference, v *model.Version) (*weights.Facts, error) {
	var facts *weights.Facts
	for _, f := range v.Files {
		if f.Encoding != "raw" || !weights.Supported(f.Path) {
			continue
		}
		hc, err := c.opts.Remote.Client(r.Registry)
		if err != nil {
			return nil, err
		}
		ra := &rangeReaderAt{ctx: ctx, client: hc, size: f.Descriptor.Size,
			url: fmt.Sprintf("%s://%s/v2/%s/blobs/%s", c.opts.Remote.Scheme(r.Registry), r.Registry, r.Repository, f.Descriptor.Digest)}
		ff, err := weights.Read(f.Path, weights.Blocks(ra, f.Descriptor.Size), f.Descriptor.Size)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue // not the format its name says: nothing to report about it
		}
		if facts == nil {
			facts = &weights.Facts{}
		}
		facts.Merge(ff)
	}
	return facts, nil
}

// rangeReaderAt reads a blob at offsets with HTTP Range requests; from a
// registry that answers 200 instead, it skips to the offset.
type rangeReaderAt struct {
	ctx    context.Context
	client interface {
		Do(*http.Request) (*http.Response, error)
	}
	url  string
	size int64
}

func (r *rangeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.size)
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("reading %s: %s", r.url, resp.Status)
	}
	n, err := io.ReadFull(resp.Body, p[:end-off])
	if err == nil && end-off < int64(len(p)) {
		err = io.EOF
	}
	return n, err
}
