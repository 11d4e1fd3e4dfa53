package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/modelreg/modelreg/pkg/imageview"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/weights"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
)

// ViewSuffix ends the name of the repository that serves the image views
// of a model repository: team/fraud/image shows team/fraud. Its tags are
// the model's (versions and stages, resolved at each request, never
// stored) and its digests the views', so a Pod can name
// REGISTRY/team/fraud/image:production or …/image@sha256:…. Nothing is
// ever written to it.
const ViewSuffix = "/image"

// views serves image views without a copy of the weights: manifests and
// configs are built from the version, and each tar layer is its header,
// the stored raw blob and its trailer, streamed. The tar digests (one read
// of each raw blob) are computed in the background after a push, or at
// the first request, and kept in the index.
type views struct {
	// base is the modelcar base image, when the operator named one.
	base   *baseImage
	idx    *index.Index
	st     *store
	log    *slog.Logger
	flight singleflight.Group
	queue  chan viewJob
}

type viewJob struct {
	repo    string
	version digest.Digest
}

func newViews(idx *index.Index, st *store, log *slog.Logger) *views {
	vs := &views{idx: idx, st: st, log: log, queue: make(chan viewJob, 1024)}
	go vs.work()
	return vs
}

// enqueue asks for the view of a version just pushed to be prepared; a
// full queue drops it (it is then built at its first request).
func (vs *views) enqueue(repo string, version digest.Digest) {
	select {
	case vs.queue <- viewJob{repo, version}:
	default:
	}
}

// work derives, for each version queued, what is read from its blobs
// once: the weights files' header facts (searchable as weights.NAME) and
// the image view's tar digests.
func (vs *views) work() {
	for j := range vs.queue {
		ctx := context.Background()
		start := time.Now()
		if err := vs.readWeights(ctx, j.repo, j.version); err != nil {
			vs.log.Warn("reading the headers of a version's weights files", "repo", j.repo, "version", j.version, "err", err)
		}
		v, err := vs.build(ctx, j.repo, j.version)
		if err != nil {
			if !errors.Is(err, errNotView) {
				vs.log.Warn("preparing an image view; it is built at its first request", "repo", j.repo, "version", j.version, "err", err)
			}
			continue
		}
		vs.log.Info("image view prepared", "repo", j.repo, "version", j.version, "view", v.Descriptor.Digest, "took", time.Since(start).Round(time.Millisecond))
	}
}

// backfill queues the versions whose weights were never read (pushed
// before this server read them, or after an index rebuild), a batch at a
// time, behind the pushes.
func (vs *views) backfill(ctx context.Context) {
	tried := map[[2]string]bool{} // a version that fails is tried once per start
	for {
		left, err := vs.idx.Underived(ctx, 100+len(tried))
		if err != nil {
			return
		}
		left = slices.DeleteFunc(left, func(v [2]string) bool { return tried[v] })
		if len(left) == 0 {
			return
		}
		for _, v := range left {
			tried[v] = true
			select {
			case vs.queue <- viewJob{v[0], digest.Digest(v[1])}:
			case <-ctx.Done():
				return
			}
		}
		// Wait for the batch to be read before asking again.
		for len(vs.queue) > 0 {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readWeights reads the headers of the version's safetensors and GGUF
// files (a few reads at the start of each stored blob) into the index,
// and a KitOps version's Kitfile package fields into its labels.
// A version of another kind, or whose files are not weights, is recorded
// as read, with no facts.
func (vs *views) readWeights(ctx context.Context, repo string, version digest.Digest) error {
	mt, payload, ok, err := vs.st.manifest(ctx, repo, version)
	if err != nil {
		return err
	}
	if !ok { // gone from storage: nothing to read, and nothing to try again
		return vs.idx.PutWeights(ctx, repo, version, nil)
	}
	var facts *weights.Facts
	if mv, err := model.Parse(ocispec.Descriptor{MediaType: mt, Digest: version, Size: int64(len(payload))}, payload); err == nil {
		if mv.Format == "kitops" && mv.Config.Size <= model.MaxProducerConfig {
			// A Kitfile's package fields, searchable as labels.kitfile.NAME.
			if b, err := vs.st.blob(ctx, repo, mv.Config.Digest); err == nil && digest.FromBytes(b) == mv.Config.Digest {
				labels := map[string]string{}
				for k, v := range model.ProducerFacts(mv.Format, b) {
					labels["kitfile."+k] = v
				}
				if err := vs.idx.PutDerivedLabels(ctx, repo, version, labels); err != nil {
					return err
				}
			}
		}
		for _, f := range mv.Files {
			if f.Encoding != "raw" || !weights.Supported(f.Path) {
				continue
			}
			rc, err := vs.open(ctx, repo, f.Descriptor.Digest)
			if err != nil {
				vs.log.Warn("a weights file could not be opened; it adds nothing to the version's weights facts", "repo", repo, "file", f.Path, "err", err)
				continue
			}
			ff, err := weights.Read(f.Path, weights.Blocks(&seekReaderAt{rs: rc}, f.Descriptor.Size), f.Descriptor.Size)
			rc.Close()
			if err != nil {
				vs.log.Warn("a weights file's header could not be read; it adds nothing to the version's weights facts", "repo", repo, "file", f.Path, "err", err)
				continue
			}
			if facts == nil {
				facts = &weights.Facts{}
			}
			facts.Merge(ff)
		}
	}
	return vs.idx.PutWeights(ctx, repo, version, facts)
}

// seekReaderAt reads a stored blob (a ReadSeeker) at offsets; one reader
// at a time.
type seekReaderAt struct {
	rs io.ReadSeeker
}

func (s *seekReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if _, err := s.rs.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := io.ReadFull(s.rs, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// errNotView is a version that has no image view (not a model, or with
// tar layers).
var errNotView = errors.New("no image view")

// build returns the view of the version of repo: its tar digests from the
// index, or computed from the raw blobs (once for concurrent requests).
func (vs *views) build(ctx context.Context, repo string, version digest.Digest) (*imageview.View, error) {
	v, err, _ := vs.flight.Do(repo+"@"+version.String(), func() (any, error) {
		mt, payload, ok, err := vs.st.manifest(ctx, repo, version)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s is not in %s", errNotView, version, repo)
		}
		desc := ocispec.Descriptor{MediaType: mt, Digest: version, Size: int64(len(payload))}
		mv, err := model.Parse(desc, payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errNotView, err)
		}
		srcs, err := imageview.Sources(mv, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errNotView, err)
		}
		files := make([]imageview.File, len(srcs))
		for i, s := range srcs {
			files[i] = s.File
			if files[i].Tar, err = vs.tarDigest(ctx, repo, s.File); err != nil {
				return nil, err
			}
		}
		view, err := imageview.Build(mv.Descriptor, files)
		if err != nil {
			return nil, err
		}
		pieces := map[digest.Digest]string{view.Descriptor.Digest: "index"}
		for i := range view.Manifests {
			pieces[view.Manifests[i].Descriptor.Digest] = "manifest"
			pieces[view.Configs[i].Descriptor.Digest] = "config"
		}
		if err := vs.idx.PutView(ctx, repo, version, pieces); err != nil {
			return nil, err
		}
		return view, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*imageview.View), nil
}

// prepared returns the view of the version when it was built already (its
// tar digests known): cheap, for the gate, which must not read a model's
// blobs while it holds a stage's lock.
func (vs *views) prepared(ctx context.Context, repo string, version digest.Digest) (*imageview.View, bool) {
	if _, ok, err := vs.idx.ViewIndexOf(ctx, repo, version); err != nil || !ok {
		return nil, false
	}
	v, err := vs.build(ctx, repo, version)
	return v, err == nil
}

// tarDigest is the digest of f's tar layer: recorded, or read from the raw
// blob (one pass) and recorded.
func (vs *views) tarDigest(ctx context.Context, repo string, f imageview.File) (digest.Digest, error) {
	d, ok, err := vs.idx.TarDigest(ctx, f.Raw, f.Path, f.Mode)
	if err != nil || ok {
		return d, err
	}
	rc, err := vs.open(ctx, repo, f.Raw)
	if err != nil {
		return "", fmt.Errorf("reading %s (%s): %w", f.Path, f.Raw, err)
	}
	defer rc.Close()
	if d, err = imageview.TarDigest(f.Path, f.Mode, f.Size, rc); err != nil {
		return "", err
	}
	return d, vs.idx.PutTarDigest(ctx, index.TarLayer{Raw: f.Raw, Path: f.Path, Mode: f.Mode, Size: f.Size, Tar: d})
}

func (vs *views) open(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, error) {
	r, err := vs.st.repo(ctx, repo)
	if err != nil {
		return nil, err
	}
	return r.Blobs(ctx).Open(ctx, d)
}

// serve answers a request to a view repository (name ends in ViewSuffix):
// manifests by tag or digest and blobs, read-only.
func (vs *views) serve(w http.ResponseWriter, r *http.Request, name, route, ref string) {
	repo := strings.TrimSuffix(name, ViewSuffix)
	ctx := r.Context()
	switch route {
	case "manifest":
		if vs.passThrough(w, r, repo, ref) {
			return
		}
		version, err := vs.resolve(ctx, repo, ref)
		if err != nil {
			vs.fail(w, err, errManifestUnknown)
			return
		}
		view, err := vs.build(ctx, repo, version)
		if err != nil {
			vs.fail(w, err, errManifestUnknown)
			return
		}
		piece := imageview.Blob{Descriptor: view.Descriptor, Bytes: view.Index} // by tag: the index
		if d, err := digest.Parse(ref); err == nil {
			b, ok := view.Find(d)
			if !ok || b.Descriptor.MediaType == ocispec.MediaTypeImageConfig {
				serveError(w, errManifestUnknown, fmt.Sprintf("%s is not an image view of %s", d, repo))
				return
			}
			piece = b
		}
		writeBlob(w, r, piece.Descriptor.MediaType, piece.Descriptor.Digest, bytes.NewReader(piece.Bytes))
	case "blob":
		d, err := digest.Parse(ref)
		if err != nil {
			serveError(w, errDigestInvalid, fmt.Sprintf("%q is not a digest", ref))
			return
		}
		vs.blob(w, r, repo, d)
	default:
		serveError(w, errUnsupported, name+" serves manifests and blobs only")
	}
}

// resolve finds the version a view reference shows: a tag of the model
// (version or stage, read from storage at this moment) or a view digest.
func (vs *views) resolve(ctx context.Context, repo, ref string) (digest.Digest, error) {
	if d, err := digest.Parse(ref); err == nil {
		version, kind, ok, err := vs.idx.ViewOf(ctx, repo, d)
		if err != nil {
			return "", err
		}
		if !ok || kind == "config" {
			return "", fmt.Errorf("%w: %s is not an image view of %s (a view is known once its version was pushed here)", errNotView, d, repo)
		}
		return version, nil
	}
	desc, ok, err := vs.st.tag(ctx, repo, ref)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: %s has no tag %s", errNotView, repo, ref)
	}
	return desc.Digest, nil
}

// blob serves a view's config or one of its tar layers: header, the raw
// blob from storage, trailer; with Range.
func (vs *views) blob(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest) {
	ctx := r.Context()
	version, kind, ok, err := vs.idx.ViewOf(ctx, repo, d)
	if err != nil {
		vs.fail(w, err, errBlobUnknown)
		return
	}
	if ok && kind == "config" {
		view, err := vs.build(ctx, repo, version)
		if err != nil {
			vs.fail(w, err, errBlobUnknown)
			return
		}
		if b, ok := view.Find(d); ok {
			writeBlob(w, r, ocispec.MediaTypeImageConfig, d, bytes.NewReader(b.Bytes))
			return
		}
	}
	layers, err := vs.idx.TarLayers(ctx, d)
	if err != nil {
		vs.fail(w, err, errBlobUnknown)
		return
	}
	for _, l := range layers {
		raw, err := vs.open(ctx, repo, l.Raw) // only a blob this repository holds
		if err != nil {
			continue
		}
		defer raw.Close()
		h, err := imageview.Header(l.Path, l.Mode, l.Size)
		if err != nil {
			vs.fail(w, err, errBlobUnknown)
			return
		}
		writeBlob(w, r, "application/octet-stream", d, newConcat(bytes.NewReader(h), &sizedSeeker{raw, l.Size}, bytes.NewReader(imageview.Trailer(l.Size))))
		return
	}
	// Another blob of the model's repository (a signature's layer).
	if vs.serveStored(w, r, repo, d) {
		return
	}
	serveError(w, errBlobUnknown, fmt.Sprintf("%s is not a blob of the image views of %s", d, repo))
}

// serveStored answers with a blob repo holds in storage, as it is; it
// reports false when repo has no such blob.
func (vs *views) serveStored(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest) bool {
	rc, err := vs.open(r.Context(), repo, d)
	if err != nil {
		return false
	}
	defer rc.Close()
	size, err := rc.Seek(0, io.SeekEnd)
	if err != nil {
		return false
	}
	rc.Seek(0, io.SeekStart)
	writeBlob(w, r, "application/octet-stream", d, newConcat(&sizedSeeker{rc, size}))
	return true
}

// passThrough serves, from the model's repository, the manifests that
// are about views rather than views themselves: signatures and
// attestations (cosign's sha256-<hex>.sig tags, bundles by digest), so
// `cosign verify REGISTRY/repo/image@sha256:…` finds what `modelreg sign`
// stored beside the model. Versions, stages and view digests are left to
// the view; so is anything that is a model version. It reports whether it
// answered.
func (vs *views) passThrough(w http.ResponseWriter, r *http.Request, repo, ref string) bool {
	ctx := r.Context()
	var d digest.Digest
	if pd, err := digest.Parse(ref); err == nil {
		if _, _, ok, _ := vs.idx.ViewOf(ctx, repo, pd); ok {
			return false
		}
		d = pd
	} else {
		if tag.Classify(ref) != tag.Other {
			return false
		}
		desc, ok, err := vs.st.tag(ctx, repo, ref)
		if err != nil || !ok {
			return false
		}
		d = desc.Digest
	}
	mt, payload, ok, err := vs.st.manifest(ctx, repo, d)
	if err != nil || !ok {
		return false
	}
	if c, err := model.ClassifyManifest(mt, payload); err != nil || c.Kind == model.KindModel {
		return false
	}
	writeBlob(w, r, mt, d, bytes.NewReader(payload))
	return true
}

func (vs *views) fail(w http.ResponseWriter, err error, notFound errcode.ErrorCode) {
	if errors.Is(err, errNotView) || errors.Is(err, distribution.ErrBlobUnknown) || isPathNotFound(err) {
		serveError(w, notFound, err.Error())
		return
	}
	vs.log.Error("image view", "err", err)
	serveError(w, errUnknown, err.Error())
}

// writeBlob answers with content (and Range, HEAD, Content-Length) under
// its digest.
func writeBlob(w http.ResponseWriter, r *http.Request, mediaType string, d digest.Digest, content io.ReadSeeker) {
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("ETag", `"`+d.String()+`"`)
	http.ServeContent(w, r, "", time.Time{}, content)
}
