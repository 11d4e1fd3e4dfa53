package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/distribution/reference"
	"github.com/modelreg/modelreg/pkg/imageview"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ModelcarSuffix ends the name of the repository that serves a model's
// versions as modelcars: the operator's base image (a shell, ln, sleep)
// with the version's files at /models on top, what KServe's oci:// storage
// runs as a sidecar. Tags and digests work as for the image view.
const ModelcarSuffix = "/modelcar"

// AnnotationModelcarBase, on a modelcar manifest, names the base image.
const AnnotationModelcarBase = "io.modelreg.modelcar.base"

// baseImage is the modelcar base: a single-platform image in a repository
// of this registry, pinned by digest.
type baseImage struct {
	repo   string
	digest digest.Digest
}

func (b *baseImage) String() string { return b.repo + "@" + b.digest.String() }

func validRepoName(name string) bool {
	_, err := reference.WithName(name)
	return err == nil
}

// modelcar is a version's modelcar: manifest and config, built from the
// base image and the version's image view.
type modelcar struct {
	manifest, config imageview.Blob
}

// buildModelcar stacks the version's tar layers (its image view's) on the
// base image: the base's layers first, then one layer per file under
// /models; the config is the base's, with the new diff_ids and history.
func (vs *views) buildModelcar(ctx context.Context, repo string, version digest.Digest) (*modelcar, error) {
	if vs.base == nil {
		return nil, fmt.Errorf("%w: this registry serves no modelcars (start modelreg serve with --modelcar-base REPO@sha256:…)", errNotView)
	}
	view, err := vs.build(ctx, repo, version)
	if err != nil {
		return nil, err
	}
	mt, payload, ok, err := vs.st.manifest(ctx, vs.base.repo, vs.base.digest)
	if err != nil {
		return nil, err
	}
	if !ok || (mt != ocispec.MediaTypeImageManifest && mt != "application/vnd.docker.distribution.manifest.v2+json") {
		return nil, fmt.Errorf("the modelcar base %s is not a single-platform image in this registry (%q): push it here, by digest", vs.base, mt)
	}
	var base ocispec.Manifest
	if err := json.Unmarshal(payload, &base); err != nil {
		return nil, fmt.Errorf("the modelcar base %s: %w", vs.base, err)
	}
	cb, err := vs.st.blob(ctx, vs.base.repo, base.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("the modelcar base's config: %w", err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("the modelcar base's config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(base.Layers) {
		return nil, fmt.Errorf("the modelcar base %s has %d layers and %d diff_ids", vs.base, len(base.Layers), len(cfg.RootFS.DiffIDs))
	}
	for _, l := range view.Layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.Digest)
		if len(cfg.History) > 0 {
			cfg.History = append(cfg.History, ocispec.History{CreatedBy: "modelreg: /models/ from " + l.Annotations[imageview.AnnotationRaw]})
		}
	}
	config, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cd,
		Layers:    append(append([]ocispec.Descriptor(nil), base.Layers...), view.Layers...),
		Annotations: map[string]string{
			imageview.AnnotationVersion:  version.String(),
			imageview.AnnotationEncoding: imageview.Encoding,
			AnnotationModelcarBase:       vs.base.String(),
		},
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	if err := vs.idx.PutView(ctx, repo, version, map[digest.Digest]string{md.Digest: "modelcar-manifest", cd.Digest: "modelcar-config"}); err != nil {
		return nil, err
	}
	return &modelcar{manifest: imageview.Blob{Descriptor: md, Bytes: manifest}, config: imageview.Blob{Descriptor: cd, Bytes: config}}, nil
}

// serveModelcar answers a request to a modelcar repository (name ends in
// ModelcarSuffix), read-only: manifests by the model's tags or by digest,
// the config, the base's layers and the version's tar layers.
func (vs *views) serveModelcar(w http.ResponseWriter, r *http.Request, name, route, ref string) {
	repo := strings.TrimSuffix(name, ModelcarSuffix)
	ctx := r.Context()
	switch route {
	case "manifest":
		var version digest.Digest
		if d, err := digest.Parse(ref); err == nil {
			v, kind, ok, err := vs.idx.ViewOf(ctx, repo, d)
			if err != nil || !ok || kind != "modelcar-manifest" {
				serveError(w, errManifestUnknown, fmt.Sprintf("%s is not a modelcar of %s", d, repo))
				return
			}
			version = v
		} else {
			desc, ok, err := vs.st.tag(ctx, repo, ref)
			if err != nil || !ok {
				serveError(w, errManifestUnknown, fmt.Sprintf("%s has no tag %s", repo, ref))
				return
			}
			version = desc.Digest
		}
		mc, err := vs.buildModelcar(ctx, repo, version)
		if err != nil {
			vs.fail(w, err, errManifestUnknown)
			return
		}
		if d, err := digest.Parse(ref); err == nil && d != mc.manifest.Descriptor.Digest {
			serveError(w, errManifestUnknown, fmt.Sprintf("%s is not the modelcar of %s@%s with this server's base", d, repo, version))
			return
		}
		writeBlob(w, r, ocispec.MediaTypeImageManifest, mc.manifest.Descriptor.Digest, bytes.NewReader(mc.manifest.Bytes))
	case "blob":
		d, err := digest.Parse(ref)
		if err != nil {
			serveError(w, errDigestInvalid, fmt.Sprintf("%q is not a digest", ref))
			return
		}
		if v, kind, ok, err := vs.idx.ViewOf(ctx, repo, d); err == nil && ok && kind == "modelcar-config" {
			mc, err := vs.buildModelcar(ctx, repo, v)
			if err != nil {
				vs.fail(w, err, errBlobUnknown)
				return
			}
			writeBlob(w, r, ocispec.MediaTypeImageConfig, d, bytes.NewReader(mc.config.Bytes))
			return
		}
		if vs.base != nil && vs.serveStored(w, r, vs.base.repo, d) { // a layer of the base
			return
		}
		vs.blob(w, r, repo, d)
	default:
		serveError(w, errUnsupported, name+" serves manifests and blobs only")
	}
}
