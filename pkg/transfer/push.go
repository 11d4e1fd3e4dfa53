// Package transfer moves model versions between a local directory and a
// registry: streaming, concurrent, verified, and never half-done.
package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
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
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// PushOptions tunes Push. The zero value is usable: a zero field takes its
// value from DefaultPushOptions.
type PushOptions struct {
	// Metadata goes into the manifest's annotations.
	Metadata model.Metadata
	// CreatedIsDefault says Metadata.Created was not chosen by the caller
	// (it is "now"): when the version tag exists, the existing version's
	// creation time is taken instead, so a retried identical push (a CI
	// re-run) is a no-op rather than an immutability error.
	CreatedIsDefault bool
	// Concurrency is how many files are hashed or uploaded at once.
	Concurrency int
	// Retry is how a file's upload is retried: each attempt reads the file
	// again, and one file's retries never restart the others. The config
	// blob and the manifest are retried by the registry client's transport
	// (remote.Options.Retry), which can replay them.
	Retry remote.RetryPolicy
	// Progress reports each file.
	Progress progress.Reporter
	// Streamer, when set, uploads files in one read, resumably; without it
	// files are hashed, then sent.
	Streamer *Streamer
	// Parts, when set, uploads files of Parts.Threshold bytes or more in
	// parts over several connections (a registry with the uploads-in-parts
	// extension), resumably.
	Parts *PartUploader
	// HashFirst hashes every file the digest cache does not know before
	// sending anything, so a blob the registry already has (a fresh CI
	// runner re-pushing known weights) is never sent: one more read of each
	// file, which only a link as fast as the disk cannot afford.
	HashFirst bool
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

// DefaultPushOptions fill the zero fields of the PushOptions given to Push:
// 2 files at once per CPU (at least 4), since a push alternates reading,
// hashing and waiting on the network; remote.DefaultRetryPolicy; no
// progress reports.
var DefaultPushOptions = PushOptions{
	Concurrency: max(4, 2*runtime.NumCPU()),
	Retry:       remote.DefaultRetryPolicy,
	Progress:    progress.Discard(),
}

// withDefaults returns o with its zero fields taken from DefaultPushOptions.
func (o PushOptions) withDefaults() PushOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultPushOptions.Concurrency
	}
	if o.Retry == (remote.RetryPolicy{}) {
		o.Retry = DefaultPushOptions.Retry
	}
	if o.Progress == nil {
		o.Progress = DefaultPushOptions.Progress
	}
	return o
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
	// Ignored are the paths of the directories pushed that were left out
	// (.git/, .DS_Store, .cache/, what .modelregignore lists).
	Ignored []string `json:"ignored,omitempty"`
	// Image is the version's image view pinned by digest, and ImageSent
	// the tar bytes uploaded for it, when the push wrote one (push --image).
	Image     string `json:"image,omitempty"`
	ImageSent int64  `json:"imageSent,omitempty"`
	// Warnings are problems that did not fail the push but that the user
	// should hear of, such as a digest cache that could not be saved (the
	// next push then hashes the files again).
	Warnings []string `json:"warnings,omitempty"`
}

// Push stores files as version tag of repo: a registry, or any oras
// Target (an OCI layout directory); a registry's optional capabilities
// (mounting, pushing a manifest with its tag) are used when it has them. It uploads only the blobs the
// registry lacks, and tags the manifest last, so a failed push leaves no
// tag behind. An existing tag is never moved: versions are immutable, and
// pushing identical content again succeeds without change.
//
// It runs four steps: plan (what is known, what must be hashed first),
// hash, upload (skipped when the tag exists), commit (the config and the
// tagged manifest, or the comparison with the existing tag).
func Push(ctx context.Context, repo oras.Target, ref registry.Reference, files []model.File, opts PushOptions) (*PushResult, error) {
	p, err := planPush(ctx, repo, ref, files, opts.withDefaults())
	if err != nil {
		return nil, err
	}
	if err := p.hash(ctx); err != nil {
		return nil, err
	}
	if p.existing == nil {
		err = p.upload(ctx)
	}
	p.saveCache()
	if err != nil {
		return nil, err
	}
	return p.commit(ctx)
}

// pusher is one push in progress: the plan, then what each step found.
type pusher struct {
	repo     oras.Target
	ref      registry.Reference
	repoName string // REGISTRY/REPO, as the digest cache records it
	opts     PushOptions
	files    []model.File
	abs      []string      // absolute path of file i, the digest cache's key
	infos    []os.FileInfo // what the digest cache checks file i against
	// known is file i's digest once known: from the cache, from hashing
	// first, or from its upload.
	known []digest.Digest
	// hashFirst marks the files read for their digest before anything is
	// sent.
	hashFirst []bool
	// existing is the manifest the version tag already names, if any.
	existing *ocispec.Descriptor

	uploaded, skipped, mounted atomic.Int64
	warnings                   []string
}

// planPush checks the reference, finds whether the version tag exists,
// checks every file against its collected size, and decides which files
// are hashed before anything is sent: the files the digest cache does not
// know, when there is no streaming uploader or the tag exists (the new
// manifest is compared with it before anything is sent), and files the
// size of a base model's layer (they may be mounted). The other unknown
// files are hashed while they upload.
func planPush(ctx context.Context, repo oras.Target, ref registry.Reference, files []model.File, opts PushOptions) (*pusher, error) {
	if err := tag.ValidateVersion(ref.Reference); err != nil {
		return nil, err
	}
	if _, err := ref.Digest(); err == nil {
		return nil, fmt.Errorf("push needs a version tag, not a digest: use %s/%s:VERSION", ref.Registry, ref.Repository)
	}
	p := &pusher{
		repo: repo, ref: ref, repoName: ref.Registry + "/" + ref.Repository, opts: opts, files: files,
		abs: make([]string, len(files)), infos: make([]os.FileInfo, len(files)),
		known: make([]digest.Digest, len(files)), hashFirst: make([]bool, len(files)),
	}
	existing, err := repo.Resolve(ctx, ref.Reference)
	switch {
	case err == nil:
		p.existing = &existing
	case !remote.IsNotFound(err):
		return nil, remote.Explain(err, ref.String())
	}
	baseSizes := map[int64]bool{}
	for _, l := range opts.BaseLayers {
		baseSizes[l.Size] = true
	}
	for i, f := range files {
		info, err := os.Stat(f.Source)
		if err != nil {
			return nil, err
		}
		if info.Size() != f.Size {
			return nil, fmt.Errorf("%s changed size while it was being pushed; push again once it is complete", f.Source)
		}
		p.abs[i], _ = filepath.Abs(f.Source)
		p.infos[i] = info
		if d, ok := opts.Cache.Get(p.abs[i], info); ok {
			p.known[i] = d
		} else {
			p.hashFirst[i] = opts.Streamer == nil || opts.HashFirst || p.existing != nil || baseSizes[f.Size]
		}
	}
	return p, nil
}

// hash reads the files the plan marked for hashing first, concurrently,
// and records their digests in the cache.
func (p *pusher) hash(ctx context.Context) error {
	var bytes int64
	for i, f := range p.files {
		if p.hashFirst[i] {
			bytes += f.Size
		}
	}
	if bytes == 0 {
		return nil
	}
	hashing := p.opts.Progress.Track("hashed", fmt.Sprintf("%d files", len(p.files)), bytes)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Concurrency)
	for i, f := range p.files {
		if !p.hashFirst[i] {
			continue
		}
		g.Go(func() error {
			d, err := hashFile(gctx, f, hashing)
			if err != nil {
				return err
			}
			p.known[i] = d
			p.opts.Cache.Put(p.abs[i], p.infos[i], d, "")
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		hashing.Fail(err)
		p.opts.Progress.Wait()
		return err
	}
	hashing.Done("hashed")
	return nil
}

// upload puts every file's blob in the repository, concurrently: each one
// is skipped when the registry has it, mounted when another repository of
// the registry has it, or sent (pushFile). A file with the same content as
// an earlier one of this push is counted as skipped, not sent twice.
func (p *pusher) upload(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Concurrency)
	first := map[digest.Digest]bool{}
	for i, f := range p.files {
		if d := p.known[i]; d != "" {
			if first[d] {
				p.skipped.Add(f.Size)
				continue
			}
			first[d] = true
		}
		g.Go(func() error {
			d, how, sent, err := pushFile(gctx, p.repo, f, p.known[i], p.mountFrom(i), p.opts)
			if err != nil {
				return remote.Explain(err, p.ref.String())
			}
			p.known[i] = d
			p.opts.Cache.Put(p.abs[i], p.infos[i], d, p.repoName)
			p.uploaded.Add(sent)
			switch how {
			case "exists":
				p.skipped.Add(f.Size)
			case "mounted":
				p.mounted.Add(f.Size)
			}
			return nil
		})
	}
	err := g.Wait()
	p.opts.Progress.Wait()
	return err
}

// mountFrom lists the repositories of the push's registry that file i may
// be mounted from: the base model's, then those the cache saw it pushed to.
func (p *pusher) mountFrom(i int) []string {
	var names []string
	for _, r := range append(slices.Clone(p.opts.MountFrom), p.opts.Cache.Repos(p.abs[i], p.infos[i])...) {
		if name, ok := strings.CutPrefix(r, p.ref.Registry+"/"); ok && r != p.repoName && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// saveCache writes the digest cache. A cache that cannot be written is a
// warning, not a failure: the version is in the registry all the same,
// and the next push hashes the files again.
func (p *pusher) saveCache() {
	if err := p.opts.Cache.Save(); err != nil {
		p.warnings = append(p.warnings, fmt.Sprintf("the digest cache was not saved, so the next push reads every file again: %v", err))
	}
}

// commit finishes the push. When the tag exists, it compares the manifest
// these files make with the tag's: the same is a no-op, a different one is
// refused (versions are immutable). Otherwise it uploads the config blob,
// then the manifest with the tag: the version appears only now.
func (p *pusher) commit(ctx context.Context) (*PushResult, error) {
	layers := make([]ocispec.Descriptor, len(p.files))
	for i, f := range p.files {
		layers[i] = model.LayerDescriptor(f, p.known[i])
	}
	config, manifest, err := model.Pack(p.opts.Metadata, layers)
	if err != nil {
		return nil, err
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest)), ArtifactType: mediatypes.ArtifactTypeModel}
	if e := p.existing; e != nil {
		if mdesc.Digest != e.Digest {
			if err := p.conflict(ctx, *e, layers); err != errSameContent {
				return nil, err
			}
		}
		res := &PushResult{Reference: p.ref.String(), Digest: e.Digest.String(), MediaType: e.MediaType, Files: len(p.files), Unchanged: true, Warnings: p.warnings}
		for _, f := range p.files {
			res.Size += f.Size
		}
		res.Skipped = res.Size
		return res, nil
	}
	cdesc := ocispec.Descriptor{MediaType: mediatypes.ModelConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	sent, err := pushBytes(ctx, p.repo, cdesc, config)
	if err != nil {
		return nil, remote.Explain(err, p.ref.String())
	}
	if sent {
		p.uploaded.Add(cdesc.Size)
	} else {
		p.skipped.Add(cdesc.Size)
	}
	if err := pushTagged(ctx, p.repo, mdesc, manifest, p.ref.Reference); err != nil {
		return nil, remote.Explain(err, p.ref.String())
	}
	res := &PushResult{Reference: p.ref.String(), Digest: mdesc.Digest.String(), MediaType: mdesc.MediaType, Files: len(p.files), Size: int64(len(config)),
		Uploaded: p.uploaded.Load(), Skipped: p.skipped.Load(), Mounted: p.mounted.Load(), Warnings: p.warnings}
	for _, l := range layers {
		res.Size += l.Size
	}
	return res, nil
}

// conflict explains why the version tag already names other content: it
// is a no-op when only the default creation time differs (the caller did
// not choose it), else an error naming what differs.
func (p *pusher) conflict(ctx context.Context, existing ocispec.Descriptor, layers []ocispec.Descriptor) error {
	immutable := fmt.Errorf("version %s already exists with digest %s; versions are immutable: push under a new version tag", p.ref, existing.Digest)
	rc, err := p.repo.Fetch(ctx, existing)
	if err != nil {
		return immutable
	}
	raw, err := content.ReadAll(rc, existing)
	rc.Close()
	if err != nil {
		return immutable
	}
	old, err := model.Parse(existing, raw)
	if err != nil {
		return immutable
	}
	meta := p.opts.Metadata
	if p.opts.CreatedIsDefault {
		meta.Created = old.Metadata.Created
	}
	if _, manifest, err := model.Pack(meta, layers); err == nil && digest.FromBytes(manifest) == existing.Digest {
		return errSameContent
	}
	diffs := model.Diff(old, meta, layers)
	if len(diffs) == 0 {
		return immutable
	}
	return fmt.Errorf("%w; it differs in %s", immutable, strings.Join(diffs, "; "))
}

// errSameContent is conflict's "no conflict": the push is a no-op.
var errSameContent = errors.New("same content")

// pushTagged stores a manifest under a tag: in one request where the
// target can (a registry), else as a push then a tag (an OCI layout).
func pushTagged(ctx context.Context, target oras.Target, desc ocispec.Descriptor, manifest []byte, tag string) error {
	if rp, ok := target.(registry.ReferencePusher); ok {
		return rp.PushReference(ctx, desc, bytes.NewReader(manifest), tag)
	}
	if err := target.Push(ctx, desc, bytes.NewReader(manifest)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	return target.Tag(ctx, desc, tag)
}

// pushBytes uploads a small blob held in memory unless the registry has
// it. Its body can be replayed, so the transport retries it.
func pushBytes(ctx context.Context, repo content.Storage, desc ocispec.Descriptor, b []byte) (sent bool, err error) {
	if ok, err := repo.Exists(ctx, desc); err == nil && ok {
		return false, nil
	}
	err = repo.Push(ctx, desc, bytes.NewReader(b))
	return err == nil, err
}

// pushFile stores one file in the registry unless it is there already:
// by mounting it from another repository of the registry that has it, else
// by uploading it (streamed and hashed in one read when a Streamer is set).
// known is its digest when already known. how is "exists", "mounted" or
// "pushed"; sent counts the bytes that went over the wire.
func pushFile(ctx context.Context, repo content.Storage, f model.File, known digest.Digest, mountFrom []string, opts PushOptions) (d digest.Digest, how string, sent int64, err error) {
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
		if m, ok := repo.(registry.Mounter); ok {
			for _, from := range mountFrom {
				if m.Mount(ctx, desc, from, nil) == nil {
					return known, "mounted", 0, nil
				}
			}
		}
	}
	// The file is read into the request as it is sent: the transport
	// cannot replay that body, so the whole upload is retried here (a
	// resumable upload sends only what the registry lacks).
	if opts.Parts != nil && f.Size >= opts.Parts.Threshold {
		err = opts.Retry.Do(ctx, func(ctx context.Context) error {
			var n int64
			d, n, err = opts.Parts.Upload(ctx, f.Source, known, t)
			sent += n
			return err
		})
		return d, "pushed", sent, err
	}
	if opts.Streamer != nil {
		err = opts.Retry.Do(ctx, func(ctx context.Context) error {
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
	err = opts.Retry.Do(ctx, func(ctx context.Context) error {
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
