package imageview

import (
	"encoding/json"
	"fmt"
	"io/fs"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations of an image view (docs/format.md, "Image view").
const (
	// AnnotationVersion, on the view's manifest, is the digest of the
	// model version it shows.
	AnnotationVersion = "io.modelreg.view.version"
	// AnnotationEncoding, on the view's manifest, is the tar Encoding.
	AnnotationEncoding = "io.modelreg.view.encoding"
	// AnnotationRaw, on each tar layer, is the digest of the raw layer of
	// the version it wraps: what a server serving the view without a copy
	// of the weights reads the tar's content from.
	AnnotationRaw = "io.modelreg.view.raw"
)

// File is one file of a version as its view needs it.
type File struct {
	Path string
	Mode fs.FileMode
	Size int64
	// Raw is the version's layer: the file's bytes.
	Raw digest.Digest
	// Tar is the digest of the file's tar layer (Header + bytes + Trailer),
	// known only by reading the bytes once (TarDigest).
	Tar digest.Digest
}

// ArtifactType marks an image view's index, so a client finds a version's
// view among its referrers.
const ArtifactType = "application/vnd.modelreg.image-view.v1"

// Platforms are the platforms a view lists. Model files run on any
// platform, but container runtimes pick an image by platform (and some
// check the config's): the view offers one manifest per platform
// Kubernetes ships nodes for, all with the same layers. Part of the
// view's identity: changing the list changes every view's digest.
var Platforms = []ocispec.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
	{OS: "linux", Architecture: "ppc64le"},
	{OS: "linux", Architecture: "s390x"},
}

// Blob is one piece of a view: its descriptor and bytes.
type Blob struct {
	Descriptor ocispec.Descriptor
	Bytes      []byte
}

// View is the image view of one version: an image index (the digest a
// Pod pins) over one manifest per platform, each with its config, all
// sharing the tar layers.
type View struct {
	Index      []byte
	Descriptor ocispec.Descriptor
	// Manifests and Configs are per platform, in Platforms order.
	Manifests []Blob
	Configs   []Blob
	Layers    []ocispec.Descriptor
}

// Find returns the manifest, config or index of the view with digest d.
func (v *View) Find(d digest.Digest) (Blob, bool) {
	if v.Descriptor.Digest == d {
		return Blob{v.Descriptor, v.Index}, true
	}
	for _, b := range append(append([]Blob(nil), v.Manifests...), v.Configs...) {
		if b.Descriptor.Digest == d {
			return b, true
		}
	}
	return Blob{}, false
}

// Build makes the image view of the version whose manifest is version,
// with files in the version's layer order. Everything in it is derived
// from the version and the tar digests, so it is the same wherever it is
// built.
func Build(version ocispec.Descriptor, files []File) (*View, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("version %s has no files: it has no image view", version.Digest)
	}
	var diffIDs []digest.Digest
	layers := make([]ocispec.Descriptor, len(files))
	for i, f := range files {
		if f.Tar == "" || f.Raw == "" {
			return nil, fmt.Errorf("%s: the tar digest and raw digest are both needed", f.Path)
		}
		size, err := LayerSize(f.Path, f.Mode, f.Size)
		if err != nil {
			return nil, err
		}
		diffIDs = append(diffIDs, f.Tar)
		layers[i] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: f.Tar, Size: size,
			Annotations: map[string]string{AnnotationRaw: f.Raw.String()}}
	}
	v := &View{Layers: layers}
	idx := ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: ArtifactType,
		Subject:      &ocispec.Descriptor{MediaType: version.MediaType, Digest: version.Digest, Size: version.Size},
		Annotations: map[string]string{
			AnnotationVersion:  version.Digest.String(),
			AnnotationEncoding: Encoding,
		},
	}
	for _, p := range Platforms {
		config, err := json.Marshal(ocispec.Image{Platform: p, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
		if err != nil {
			return nil, err
		}
		cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
		manifest, err := json.Marshal(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    cd,
			Layers:    layers,
			Annotations: map[string]string{
				AnnotationVersion:  version.Digest.String(),
				AnnotationEncoding: Encoding,
			},
		})
		if err != nil {
			return nil, err
		}
		md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
		v.Configs = append(v.Configs, Blob{cd, config})
		v.Manifests = append(v.Manifests, Blob{md, manifest})
		pd := md
		pd.Platform = &ocispec.Platform{OS: p.OS, Architecture: p.Architecture}
		idx.Manifests = append(idx.Manifests, pd)
	}
	index, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	v.Index = index
	v.Descriptor = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(index), Size: int64(len(index))}
	return v, nil
}
