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
	"github.com/opencontainers/go-digest"
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
	// Base is a modelcar's base image (REGISTRY/REPO@sha256:…).
	Base string `json:"base,omitempty"`
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
	l, err := referrers.List(ctx, repo, v.Descriptor, referrers.ListOptions{ArtifactType: imageview.ArtifactType})
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

// CheckImage recomputes the image view of the version ref from the
// version's own blobs (one read of each, every blob verified against its
// digest) and compares it with the view the registry serves or holds: a
// deploy step that verified the version's signatures can then trust the
// view's digest without trusting the registry. It returns the view when
// they agree, and an error naming both digests when they do not.
func (c *Client) CheckImage(ctx context.Context, ref string) (*ImageView, error) {
	iv, err := c.Image(ctx, ref)
	if err != nil {
		return nil, err
	}
	_, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	srcs, err := imageview.Sources(v, func(_ int, f model.FileEntry) (io.ReadCloser, error) {
		rc, err := repo.Blobs().Fetch(ctx, f.Descriptor)
		if err != nil {
			return nil, err
		}
		return verifiedReader(rc, f.Descriptor), nil
	})
	if err != nil {
		return nil, err
	}
	files := make([]imageview.File, len(srcs))
	for i, s := range srcs {
		rc, err := s.Open()
		if err != nil {
			return nil, err
		}
		files[i] = s.File
		files[i].Tar, err = imageview.TarDigest(s.Path, s.Mode, s.Size, rc)
		if err == nil {
			_, err = io.Copy(io.Discard, rc) // to the end: the digest is checked there
		}
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Path, err)
		}
	}
	want, err := imageview.Build(v.Descriptor, files)
	if err != nil {
		return nil, err
	}
	if want.Descriptor.Digest.String() != iv.Digest {
		return nil, fmt.Errorf("the registry's image view of %s is %s, but the version's files make %s: do not deploy it", v.Descriptor.Digest, iv.Digest, want.Descriptor.Digest)
	}
	return iv, nil
}

// verifiedReader fails the read that ends a blob whose bytes do not have
// its digest.
func verifiedReader(rc io.ReadCloser, d ocispec.Descriptor) io.ReadCloser {
	return &digestReader{rc: rc, v: d.Digest.Verifier(), want: d}
}

type digestReader struct {
	rc   io.ReadCloser
	v    digest.Verifier
	want ocispec.Descriptor
	n    int64
}

func (r *digestReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.v.Write(p[:n])
	r.n += int64(n)
	if err == io.EOF && (r.n != r.want.Size || !r.v.Verified()) {
		return n, fmt.Errorf("blob %s: the registry sent other bytes (%d of %d): refusing it", r.want.Digest, r.n, r.want.Size)
	}
	return n, err
}

func (r *digestReader) Close() error { return r.rc.Close() }

// Modelcar finds the modelcar modelreg serve serves for the version ref:
// the operator's base image (with sh) under the version's files at
// /models, for KServe's oci:// storage. Only modelreg serve started with
// --modelcar-base serves them.
func (c *Client) Modelcar(ctx context.Context, ref string) (*ImageView, error) {
	r, _, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	api, err := c.Server(ctx, r.Registry)
	if err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: modelcars are derived by modelreg serve started with --modelcar-base", r.Registry)
	}
	mc, err := api.Modelcar(ctx, r.Repository, v.Descriptor.Digest.String())
	if err != nil {
		return nil, err
	}
	return &ImageView{Reference: fmt.Sprintf("%s/%s@%s", r.Registry, mc.Repository, mc.Digest), Digest: mc.Digest, Version: mc.Version, Base: r.Registry + "/" + mc.Base}, nil
}
