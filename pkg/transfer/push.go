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
	"path/filepath"
	"runtime"
	"slices"
	"strings"
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
	// Streamer, when set, uploads files in one read, resumably; without it
	// files are hashed, then sent.
	Streamer *Streamer
	// Cache remembers digests of unchanged files between pushes; nil
	// hashes every file.
	Cache *DigestCache
	// MountFrom names repositories (REGISTRY/REPO) to mount blobs from
	// before sending them (a fine-tune's base model).
	MountFrom []string
	// BaseLayers are the layers of the base model in MountFrom: a file
	// whose size matches one is hashed before upload, so that it can be
	// mounted instead of sent when it is the same.
	BaseLayers []ocispec.Descriptor
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
	// already had; Mounted the bytes mounted from another repository.
	Uploaded int64 `json:"uploaded"`
	Skipped  int64 `json:"skipped"`
	Mounted  int64 `json:"mounted"`
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
	existing, err := repo.Resolve(ctx, ref.Reference)
	tagExists := err == nil
	if err != nil && !remote.IsNotFound(err) {
		return nil, remote.Explain(err, ref.String())
	}
	repoName := ref.Registry + "/" + ref.Repository

	// Digests the cache knows are not read again.
	known := make([]digest.Digest, len(files))
	abs := make([]string, len(files))
	infos := make([]os.FileInfo, len(files))
	baseSizes := map[int64]bool{}
	for _, l := range opts.BaseLayers {
		baseSizes[l.Size] = true
	}
	var toHash int64
	mustHash := make([]bool, len(files))
	for i, f := range files {
		info, err := os.Stat(f.Source)
		if err != nil {
			return nil, err
		}
		if info.Size() != f.Size {
			return nil, fmt.Errorf("%s changed size while it was being pushed; push again once it is complete", f.Source)
		}
		abs[i], _ = filepath.Abs(f.Source)
		infos[i] = info
		if d, ok := opts.Cache.Get(abs[i], info); ok {
			known[i] = d
		} else {
			toHash += f.Size
			mustHash[i] = opts.Streamer == nil || tagExists || baseSizes[f.Size]
		}
	}
	// Without a streaming uploader, or when the tag exists (the new manifest
	// must be compared with it before anything is sent), the unknown files
	// are hashed first, and so are files the size of a base model's layer
	// (they may be mounted); the others are hashed while they upload.
	var hashBytes int64
	for i, f := range files {
		if mustHash[i] {
			hashBytes += f.Size
		}
	}
	if hashBytes > 0 {
		hashing := opts.Progress.Track("hashed", fmt.Sprintf("%d files", len(files)), hashBytes)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(opts.Concurrency)
		for i, f := range files {
			if !mustHash[i] {
				continue
			}
			g.Go(func() error {
				d, err := hashFile(gctx, f, hashing)
				if err != nil {
					return err
				}
				known[i] = d
				opts.Cache.Put(abs[i], infos[i], d, "")
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			hashing.Fail(err)
			opts.Progress.Wait()
			return nil, err
		}
		hashing.Done("hashed")
	}
	if tagExists {
		layers := make([]ocispec.Descriptor, len(files))
		for i, f := range files {
			layers[i] = model.LayerDescriptor(f, known[i])
		}
		_, manifest, err := model.Pack(opts.Metadata, layers)
		if err != nil {
			return nil, err
		}
		if d := digest.FromBytes(manifest); d != existing.Digest {
			return nil, fmt.Errorf("version %s already exists with digest %s; versions are immutable: push under a new version tag", ref, existing.Digest)
		}
		res := &PushResult{Reference: ref.String(), Digest: existing.Digest.String(), MediaType: existing.MediaType, Files: len(files), Unchanged: true}
		for _, f := range files {
			res.Size += f.Size
		}
		res.Skipped = res.Size
		opts.Cache.Save()
		return res, nil
	}

	var uploaded, skipped, mounted atomic.Int64
	layers := make([]ocispec.Descriptor, len(files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	first := map[digest.Digest]bool{}
	for i, f := range files {
		if d := known[i]; d != "" {
			layers[i] = model.LayerDescriptor(f, d)
			if first[d] {
				skipped.Add(f.Size) // same content as another file of this push
				continue
			}
			first[d] = true
		}
		g.Go(func() error {
			var mountFrom []string
			for _, r := range append(slices.Clone(opts.MountFrom), opts.Cache.Repos(abs[i], infos[i])...) {
				if name, ok := strings.CutPrefix(r, ref.Registry+"/"); ok && r != repoName && !slices.Contains(mountFrom, name) {
					mountFrom = append(mountFrom, name)
				}
			}
			d, how, sent, err := pushFile(gctx, repo, f, known[i], mountFrom, opts)
			if err != nil {
				return remote.Explain(err, ref.String())
			}
			layers[i] = model.LayerDescriptor(f, d)
			opts.Cache.Put(abs[i], infos[i], d, repoName)
			uploaded.Add(sent)
			switch how {
			case "exists":
				skipped.Add(f.Size)
			case "mounted":
				mounted.Add(f.Size)
			}
			return nil
		})
	}
	err = g.Wait()
	opts.Progress.Wait()
	opts.Cache.Save()
	if err != nil {
		return nil, err
	}

	config, manifest, err := model.Pack(opts.Metadata, layers)
	if err != nil {
		return nil, err
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest)), ArtifactType: mediatypes.ArtifactTypeModel}
	res := &PushResult{Reference: ref.String(), Digest: mdesc.Digest.String(), MediaType: mdesc.MediaType, Files: len(files), Size: int64(len(config))}
	for _, l := range layers {
		res.Size += l.Size
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
	res.Uploaded, res.Skipped, res.Mounted = uploaded.Load(), skipped.Load(), mounted.Load()
	return res, nil
}

func pushBytes(ctx context.Context, repo registry.Repository, desc ocispec.Descriptor, b []byte, attempts int) (sent bool, err error) {
	if ok, err := repo.Exists(ctx, desc); err == nil && ok {
		return false, nil
	}
	err = retry(ctx, attempts, func() error { return repo.Push(ctx, desc, bytes.NewReader(b)) })
	return err == nil, err
}

// pushFile stores one file in the registry unless it is there already:
// by mounting it from another repository of the registry that has it, else
// by uploading it (streamed and hashed in one read when a Streamer is set).
// known is its digest when already known. how is "exists", "mounted" or
// "pushed"; sent counts the bytes that went over the wire.
func pushFile(ctx context.Context, repo registry.Repository, f model.File, known digest.Digest, mountFrom []string, opts PushOptions) (d digest.Digest, how string, sent int64, err error) {
	t := opts.Progress.Track("pushed", f.Path, f.Size)
	defer func() {
		switch {
		case err != nil:
			t.Fail(err)
		default:
			t.Done(how)
		}
	}()
	if known != "" {
		desc := model.LayerDescriptor(f, known)
		ok, err := repo.Exists(ctx, desc)
		if err != nil {
			return "", "", 0, err
		}
		if ok {
			return known, "exists", 0, nil
		}
		if m, ok := repo.(interface {
			Mount(context.Context, ocispec.Descriptor, string, func() (io.ReadCloser, error)) error
		}); ok {
			for _, from := range mountFrom {
				if m.Mount(ctx, desc, from, nil) == nil {
					return known, "mounted", 0, nil
				}
			}
		}
	}
	if opts.Streamer != nil {
		err = retry(ctx, opts.Attempts, func() error {
			var n int64
			d, n, err = opts.Streamer.Upload(ctx, f.Source, t)
			sent += n
			return err
		})
		if err == nil && known != "" && d != known {
			err = fmt.Errorf("%s changed while it was being pushed; push again once it is complete", f.Source)
		}
		return d, "pushed", sent, err
	}
	desc := model.LayerDescriptor(f, known)
	err = retry(ctx, opts.Attempts, func() error {
		fh, err := os.Open(f.Source)
		if err != nil {
			return err
		}
		defer fh.Close()
		return repo.Push(ctx, desc, progress.Reader(&exactReader{r: fh, path: f.Source, left: f.Size}, t))
	})
	if err == nil {
		sent = f.Size
	}
	return known, "pushed", sent, err
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
