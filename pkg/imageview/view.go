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

// View is the image view of one version: config and manifest bytes, and
// the manifest's descriptor (the digest a Pod pins).
type View struct {
	Config     []byte
	Manifest   []byte
	Descriptor ocispec.Descriptor
	// ConfigDescriptor and Layers are the manifest's.
	ConfigDescriptor ocispec.Descriptor
	Layers           []ocispec.Descriptor
}

// Build makes the image view of the version whose manifest is version,
// with files in the version's layer order. Everything in it is derived
// from the version and the tar digests, so it is the same wherever it is
// built.
func Build(version ocispec.Descriptor, files []File) (*View, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("version %s has no files: it has no image view", version.Digest)
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	layers := make([]ocispec.Descriptor, len(files))
	for i, f := range files {
		if f.Tar == "" || f.Raw == "" {
			return nil, fmt.Errorf("%s: the tar digest and raw digest are both needed", f.Path)
		}
		size, err := LayerSize(f.Path, f.Mode, f.Size)
		if err != nil {
			return nil, err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, f.Tar)
		layers[i] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: f.Tar, Size: size,
			Annotations: map[string]string{AnnotationRaw: f.Raw.String()}}
	}
	config, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},

		Layers:  layers,
		Subject: &ocispec.Descriptor{MediaType: version.MediaType, Digest: version.Digest, Size: version.Size},
		Annotations: map[string]string{
			AnnotationVersion:  version.Digest.String(),
			AnnotationEncoding: Encoding,
		},
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &View{Config: config, Manifest: manifest, Layers: layers, ConfigDescriptor: m.Config,
		Descriptor: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}}, nil
}
