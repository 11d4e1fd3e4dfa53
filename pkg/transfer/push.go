// Package transfer moves model versions between a local directory and a
// registry: streaming, concurrent, verified, and never half-done.
package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry"
)

// PushOptions tunes Push. The zero value is usable.
type PushOptions struct {
	// Metadata goes into the manifest's annotations.
	Metadata model.Metadata
	// Concurrency is how many files are hashed or uploaded at once;
	// 0 picks a default from the number of CPUs.
	Concurrency int
	// Attempts is how many times one blob is tried; 0 means 4.
	Attempts int
	// Progress reports each file; nil reports nothing.
	Progress progress.Reporter
}

// PushResult is what a push did, for people and for scripts.
type PushResult struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// Size is the bytes of config and layers of the version.
	Size int64 `json:"size"`
	// Files is the number of files (layers).
	Files int `json:"files"`
	// Uploaded is the bytes actually sent; Skipped the bytes the registry
	// already had.
	Uploaded int64 `json:"uploaded"`
	Skipped  int64 `json:"skipped"`
	// Unchanged is true when the tag already named this exact version.
	Unchanged bool `json:"unchanged"`
}

func (o *PushOptions) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = max(4, 2*runtime.NumCPU())
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Progress == nil {
		o.Progress = progress.Discard()
	}
}

// Push stores files as version tag of repo. It hashes every file first,
// uploads only the blobs the registry lacks, and tags the manifest last, so
// a failed push leaves no tag behind. An existing tag is never moved:
// versions are immutable, and pushing identical content again succeeds
// without change.
func Push(ctx context.Context, repo registry.Repository, ref registry.Reference, files []model.File, opts PushOptions) (*PushResult, error) {
	opts.defaults()
	if err := tag.ValidateVersion(ref.Reference); err != nil {
		return nil, err
	}
	if _, err := ref.Digest(); err == nil {
		return nil, fmt.Errorf("push needs a version tag, not a digest: use %s/%s:VERSION", ref.Registry, ref.Repository)
	}

	layers := make([]ocispec.Descriptor, len(files))
	var total int64
	for _, f := range files {
		total += f.Size
	}
	hashing := opts.Progress.Track("hashed", fmt.Sprintf("%d files", len(files)), total)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	for i, f := range files {
		g.Go(func() error {
			d, err := hashFile(gctx, f, hashing)
			if err != nil {
				return err
			}
			layers[i] = model.LayerDescriptor(f, d)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		hashing.Fail(err)
		opts.Progress.Wait()
		return nil, err
	}
	hashing.Done("hashed")

	config, manifest, err := model.Pack(opts.Metadata, layers)
	if err != nil {
		return nil, err
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest)), ArtifactType: mediatypes.ArtifactTypeModel}
	res := &PushResult{Reference: ref.String(), Digest: mdesc.Digest.String(), MediaType: mdesc.MediaType, Files: len(files), Size: int64(len(config))}
	for _, l := range layers {
		res.Size += l.Size
	}

	existing, err := repo.Resolve(ctx, ref.Reference)
	switch {
	case err == nil && existing.Digest == mdesc.Digest:
		res.Unchanged = true
		res.Skipped = res.Size
		return res, nil
	case err == nil:
		return nil, fmt.Errorf("version %s already exists with digest %s; versions are immutable: push under a new version tag", ref, existing.Digest)
	case !remote.IsNotFound(err):
		return nil, remote.Explain(err, ref.String())
	}

	var uploaded, skipped atomic.Int64
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	first := map[digest.Digest]bool{}
	for i, f := range files {
		if first[layers[i].Digest] {
			skipped.Add(f.Size) // same content as another file of this push
			continue
		}
		first[layers[i].Digest] = true
		g.Go(func() error {
			sent, err := pushFile(gctx, repo, f, layers[i], opts)
			if err != nil {
				return remote.Explain(err, ref.String())
			}
			if sent {
				uploaded.Add(f.Size)
			} else {
				skipped.Add(f.Size)
			}
			return nil
		})
	}
	err = g.Wait()
	opts.Progress.Wait()
	if err != nil {
		return nil, err
	}
	cdesc := ocispec.Descriptor{MediaType: mediatypes.ModelConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	sent, err := pushBytes(ctx, repo, cdesc, config, opts.Attempts)
	if err != nil {
		return nil, remote.Explain(err, ref.String())
	}
	if sent {
		uploaded.Add(cdesc.Size)
	} else {
		skipped.Add(cdesc.Size)
	}
	err = retry(ctx, opts.Attempts, func() error {
		return repo.PushReference(ctx, mdesc, bytes.NewReader(manifest), ref.Reference)
	})
	if err != nil {
		return nil, remote.Explain(err, ref.String())
	}
	res.Uploaded, res.Skipped = uploaded.Load(), skipped.Load()
	return res, nil
}

func pushBytes(ctx context.Context, repo registry.Repository, desc ocispec.Descriptor, b []byte, attempts int) (sent bool, err error) {
	if ok, err := repo.Exists(ctx, desc); err == nil && ok {
		return false, nil
	}
	err = retry(ctx, attempts, func() error { return repo.Push(ctx, desc, bytes.NewReader(b)) })
	return err == nil, err
}

// pushFile uploads one file unless the registry has it; sent reports
// whether bytes went over the wire.
func pushFile(ctx context.Context, repo registry.Repository, f model.File, desc ocispec.Descriptor, opts PushOptions) (sent bool, err error) {
	t := opts.Progress.Track("pushed", f.Path, f.Size)
	defer func() {
		switch {
		case err != nil:
			t.Fail(err)
		case sent:
			t.Done("pushed")
		default:
			t.Done("exists")
		}
	}()
	ok, err := repo.Exists(ctx, desc)
	if err != nil {
		return false, err
	}
	if ok {
		return false, nil
	}
	err = retry(ctx, opts.Attempts, func() error {
		fh, err := os.Open(f.Source)
		if err != nil {
			return err
		}
		defer fh.Close()
		return repo.Push(ctx, desc, progress.Reader(&exactReader{r: fh, path: f.Source, left: f.Size}, t))
	})
	return err == nil, err
}

// exactReader fails when a file changed size between hashing and upload,
// rather than letting the registry report a confusing digest error.
type exactReader struct {
	r    io.Reader
	path string
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if int64(len(p)) > e.left+1 {
		p = p[:e.left+1]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case e.left < 0:
		return n, fmt.Errorf("%s grew while it was being pushed; push again once it is complete", e.path)
	case err == io.EOF && e.left > 0:
		return n, fmt.Errorf("%s shrank while it was being pushed; push again once it is complete", e.path)
	}
	return n, err
}

func hashFile(ctx context.Context, f model.File, t progress.Tracker) (digest.Digest, error) {
	fh, err := os.Open(f.Source)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(h, progress.Reader(ctxReader{ctx, fh}, t), buf)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", f.Source, err)
	}
	if n != f.Size {
		return "", fmt.Errorf("%s changed size while it was being read; push again once it is complete", f.Source)
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// ctxReader stops a long read when the context is cancelled (Ctrl-C).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
