package client

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/modelreg/modelreg/pkg/imageview"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/transfer"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// ImageView is a version's image view as the client reports it.
type ImageView struct {
	// Reference is the view pinned by digest (REGISTRY/REPO@sha256:…), what
	// a Pod spec or `ctr image pull` takes.
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	// Version is the digest of the model version it shows.
	Version string `json:"version"`
	// Sent and Reused are the tar bytes a write uploaded and found already
	// in the registry (zero when the view was only looked up).
	Sent   int64 `json:"sent"`
	Reused int64 `json:"reused"`
}

// Image finds the image view of the version ref among its referrers.
// ErrNoImageView when the registry holds none.
// On modelreg serve, the view is served from <repo>/image, derived from
// the version without a copy of its files.
func (c *Client) Image(ctx context.Context, ref string) (*ImageView, error) {
	r, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	return c.imageOf(ctx, r, repo, v)
}

func (c *Client) imageOf(ctx context.Context, r registry.Reference, repo *orasremote.Repository, v *model.Version) (*ImageView, error) {
	ref := r.String()
	if api, err := c.Server(ctx, r.Registry); err == nil {
		iv, err := api.Image(ctx, r.Repository, v.Descriptor.Digest.String())
		if err != nil {
			return nil, err
		}
		return &ImageView{Reference: fmt.Sprintf("%s/%s@%s", r.Registry, iv.Repository, iv.Digest), Digest: iv.Digest, Version: iv.Version}, nil
	}
	l, err := referrers.List(ctx, repo, v.Descriptor, referrers.ListOptions{ArtifactType: ocispec.MediaTypeImageConfig})
	if err != nil {
		return nil, err
	}
	for _, it := range l.Items {
		a := it.Descriptor.Annotations
		if a[imageview.AnnotationVersion] == v.Descriptor.Digest.String() && a[imageview.AnnotationEncoding] == imageview.Encoding {
			return &ImageView{Reference: fmt.Sprintf("%s/%s@%s", r.Registry, r.Repository, it.Descriptor.Digest),
				Digest: it.Descriptor.Digest.String(), Version: v.Descriptor.Digest.String()}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s (%s) has none on %s; write one with `modelreg image --write %s`", ErrNoImageView, ref, v.Descriptor.Digest, r.Registry, ref)
}

// ErrNoImageView is returned by Image for a version without a view.
var ErrNoImageView = fmt.Errorf("no image view")

// WriteImage writes the image view of the version ref into its repository,
// with real tar layers, reading the version's files from the registry
// (twice: for the tar digests, then to upload): on a registry other than
// modelreg serve the view costs the model's size again. A view already
// there is reported, not written again.
func (c *Client) WriteImage(ctx context.Context, ref string) (*ImageView, error) {
	if r, _, err := c.Repository(ref); err == nil {
		if _, err := c.Server(ctx, r.Registry); err == nil {
			return c.Image(ctx, ref) // modelreg serve derives it: nothing to write
		}
	}
	if iv, err := c.Image(ctx, ref); err == nil {
		return iv, nil // there already: nothing to read or send
	}
	r, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	srcs, err := imageview.Sources(v, func(_ int, f model.FileEntry) (io.ReadCloser, error) {
		return repo.Blobs().Fetch(ctx, f.Descriptor)
	})
	if err != nil {
		return nil, err
	}
	return c.pushImage(ctx, r, repo, v, srcs)
}

// pushImageFrom writes the image view of a version just pushed from local
// files (read twice from disk, not from the registry).
func (c *Client) pushImageFrom(ctx context.Context, r registry.Reference, repo *orasremote.Repository, files []model.File) (*ImageView, error) {
	if _, err := c.Server(ctx, r.Registry); err == nil {
		return c.Image(ctx, r.String()) // modelreg serve derives it: nothing to send
	}
	v, err := transfer.Fetch(ctx, repo, r)
	if err != nil {
		return nil, err
	}
	local := map[string]string{}
	for _, f := range files {
		local[f.Path] = f.Source
	}
	srcs, err := imageview.Sources(v, func(_ int, f model.FileEntry) (io.ReadCloser, error) {
		src, ok := local[f.Path]
		if !ok {
			return nil, fmt.Errorf("%s is in the version but not among the pushed files", f.Path)
		}
		return os.Open(src)
	})
	if err != nil {
		return nil, err
	}
	return c.pushImage(ctx, r, repo, v, srcs)
}

func (c *Client) pushImage(ctx context.Context, r registry.Reference, repo *orasremote.Repository, v *model.Version, srcs []imageview.Source) (*ImageView, error) {
	w, err := imageview.Push(ctx, repo, v.Descriptor, srcs, 4)
	if err != nil {
		return nil, fmt.Errorf("writing the image view of %s: %w", v.Descriptor.Digest, err)
	}
	d := w.View.Descriptor.Digest
	return &ImageView{Reference: fmt.Sprintf("%s/%s@%s", r.Registry, r.Repository, d), Digest: d.String(),
		Version: v.Descriptor.Digest.String(), Sent: w.Sent, Reused: w.Reused}, nil
}
