package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LayerDescriptor describes the layer that stores f, whose content has digest d.
func LayerDescriptor(f File, d digest.Digest) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: f.MediaType(),
		Digest:    d,
		Size:      f.Size,
		Annotations: map[string]string{
			mediatypes.AnnotationFilepath: f.Path,
			mediatypes.AnnotationTitle:    f.Path,
			mediatypes.AnnotationFileMode: fmt.Sprintf("%04o", f.Mode.Perm()),
		},
	}
}

// modelConfig is the ModelPack config blob (application/vnd.cncf.model.config.v1+json).
type modelConfig struct {
	Descriptor struct {
		CreatedAt   *time.Time `json:"createdAt,omitempty"`
		Description string     `json:"description,omitempty"`
	} `json:"descriptor"`
	Config struct {
		Format string `json:"format,omitempty"`
	} `json:"config"`
	ModelFS struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diffIds"`
	} `json:"modelfs"`
}

// Pack builds the config blob and the manifest of a model version. The
// output depends only on the layers (in the given order) and the metadata,
// never on the repository or the version tag, so the same files and
// metadata give the same digest on every machine and in every registry:
// a version copied to another registry keeps its digest and its signatures.
func Pack(meta Metadata, layers []ocispec.Descriptor) (config, manifest []byte, err error) {
	var cfg modelConfig
	if !meta.Created.IsZero() {
		t := meta.Created.UTC()
		cfg.Descriptor.CreatedAt = &t
	}
	cfg.Descriptor.Description = meta.Description
	cfg.Config.Format = weightFormat(layers)
	cfg.ModelFS.Type = "layers"
	cfg.ModelFS.DiffIDs = make([]digest.Digest, 0, len(layers))
	for _, l := range layers {
		cfg.ModelFS.DiffIDs = append(cfg.ModelFS.DiffIDs, l.Digest)
	}
	if config, err = json.Marshal(cfg); err != nil {
		return nil, nil, err
	}
	ann := meta.Annotations()
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: mediatypes.ArtifactTypeModel,
		Config: ocispec.Descriptor{
			MediaType: mediatypes.ModelConfig,
			Digest:    digest.FromBytes(config),
			Size:      int64(len(config)),
		},
		Layers:      layers,
		Annotations: ann,
	}
	manifest, err = json.Marshal(m)
	return config, manifest, err
}

// weightFormat names the weights' file format for the config ("safetensors",
// "gguf"), or "" when the weights mix formats or there are none.
func weightFormat(layers []ocispec.Descriptor) string {
	format := ""
	for _, l := range layers {
		if kind, _, _ := mediatypes.SplitLayer(l.MediaType); kind != KindWeight {
			continue
		}
		ext := strings.TrimPrefix(path.Ext(l.Annotations[mediatypes.AnnotationFilepath]), ".")
		if format != "" && format != ext {
			return ""
		}
		format = ext
	}
	return format
}

// Version is a model version as read back from a registry.
type Version struct {
	// Descriptor is the manifest's descriptor (digest, size, media type).
	Descriptor ocispec.Descriptor `json:"descriptor"`
	// Format names the producer family: "modelpack", "modelpack-legacy",
	// "kitops" or "docker-model".
	Format string `json:"format"`
	// ArtifactType is the manifest's artifactType, or its config media type
	// when artifactType is unset.
	ArtifactType string `json:"artifactType"`
	// Config is the config blob's descriptor.
	Config ocispec.Descriptor `json:"config"`
	// Files lists the layers in manifest order.
	Files []FileEntry `json:"files"`
	// Metadata is read from the manifest's annotations.
	Metadata Metadata `json:"metadata"`
	// Subject is set when the manifest refers to another manifest.
	Subject *ocispec.Descriptor `json:"subject,omitempty"`
}

// Size is the number of bytes a pull transfers: config plus layers.
func (v *Version) Size() int64 {
	n := v.Config.Size
	for _, f := range v.Files {
		n += f.Descriptor.Size
	}
	return n
}

// FileEntry is one layer of a version and where its content goes.
type FileEntry struct {
	// Path is the file's path in the tree; for a tar layer, the path its
	// producer recorded (entries are extracted at the tree's root).
	Path string `json:"path"`
	// Kind is the ModelPack layer kind, or "" for a non-ModelPack layer.
	Kind string `json:"kind,omitempty"`
	// Encoding is how the layer holds the file: raw, tar, tar+gzip or tar+zstd.
	Encoding string `json:"encoding"`
	// Mode holds the permission bits to restore.
	Mode       fs.FileMode        `json:"mode"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
}

// ErrNotModel is returned by Parse for a manifest that is not a model.
var ErrNotModel = errors.New("not a model artifact")

// Parse reads a manifest as a model version. It accepts what real producers
// write: modelreg, a plain `oras push` with the ModelPack artifactType, legacy
// CNAI ModelPack, KitOps ModelKits and Docker model artifacts. Every file
// path is checked with CheckPath, so a caller can trust the result's paths.
func Parse(desc ocispec.Descriptor, raw []byte) (*Version, error) {
	c, err := ClassifyManifest(desc.MediaType, raw)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	switch c.Kind {
	case KindIndex:
		return nil, fmt.Errorf("%w: %s is an image index, not a model manifest", ErrNotModel, desc.Digest)
	case KindOther:
		return nil, fmt.Errorf("%w: %s has media type %q, not an OCI image manifest", ErrNotModel, desc.Digest, c.MediaType)
	case KindImage:
		return nil, fmt.Errorf("%w: %s has artifactType %q; a model has artifactType %s (push it with modelreg, or with `oras push --artifact-type %s`)",
			ErrNotModel, desc.Digest, c.ArtifactType, mediatypes.ArtifactTypeModel, mediatypes.ArtifactTypeModel)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest %s is not valid JSON: %w", desc.Digest, err)
	}
	if desc.MediaType == "" {
		desc.MediaType = c.MediaType
	}
	v := &Version{Descriptor: desc, ArtifactType: c.ArtifactType, Format: c.Format, Config: m.Config, Subject: m.Subject}
	meta, err := ParseAnnotations(m.Annotations)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	v.Metadata = meta
	seen := map[string]int{} // raw file path -> its layer
	for i, l := range m.Layers {
		f, err := fileEntry(v.Format, l)
		if err != nil {
			return nil, fmt.Errorf("manifest %s, layer %d (%s): %w", desc.Digest, i, l.Digest, err)
		}
		if _, dup := seen[f.Path]; dup && untitled(l) && len(l.Digest.Encoded()) >= 12 {
			// A name modelreg gave (two GGUF shards of a Docker model):
			// told apart by digest.
			ext := path.Ext(f.Path)
			f.Path = strings.TrimSuffix(f.Path, ext) + "-" + l.Digest.Encoded()[:12] + ext
		}
		if f.Encoding == mediatypes.EncodingRaw {
			if j, dup := seen[f.Path]; dup {
				return nil, fmt.Errorf("manifest %s: layer %d (%s) and layer %d (%s) both hold file path %q; a model's file paths must be unique",
					desc.Digest, j, m.Layers[j].Digest, i, l.Digest, f.Path)
			}
			seen[f.Path] = i
		}
		v.Files = append(v.Files, f)
	}
	// A raw file cannot also be the directory of another ("a" and "a/b"):
	// which one a pull kept would depend on the order it wrote them in.
	for i, f := range v.Files {
		if f.Encoding != mediatypes.EncodingRaw {
			continue
		}
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if j, ok := seen[d]; ok {
				return nil, fmt.Errorf("manifest %s: layer %d (%s) holds file path %q, which layer %d (%s) needs as a directory for %q",
					desc.Digest, j, m.Layers[j].Digest, d, i, m.Layers[i].Digest, f.Path)
			}
		}
	}
	return v, nil
}

func fileEntry(format string, l ocispec.Descriptor) (FileEntry, error) {
	f := FileEntry{Descriptor: l, Mode: 0o644, Encoding: mediatypes.EncodingRaw}
	if kind, enc, ok := mediatypes.SplitLayer(l.MediaType); ok {
		f.Kind, f.Encoding = kind, enc
	} else {
		switch {
		case strings.HasPrefix(l.MediaType, mediatypes.KitOpsPrefix):
			f.Encoding = mediatypes.EncodingTar
			if strings.HasSuffix(l.MediaType, "+gzip") {
				f.Encoding = mediatypes.EncodingTarGzip
			} else if strings.HasSuffix(l.MediaType, "+zstd") {
				f.Encoding = mediatypes.EncodingTarZstd
			}
		case l.Annotations["io.deis.oras.content.unpack"] == "true":
			// A directory pushed by `oras push dir/`: a gzipped tar of the directory.
			f.Encoding = mediatypes.EncodingTarGzip
		}
	}
	for _, key := range []string{mediatypes.AnnotationFilepath, mediatypes.LegacyAnnotationFilepath, mediatypes.AnnotationTitle} {
		if p := l.Annotations[key]; p != "" {
			f.Path = p
			break
		}
	}
	if f.Path == "" && format == "docker-model" {
		f.Path = dockerModelFileName(l.MediaType)
	}
	if f.Path == "" && f.Encoding == mediatypes.EncodingRaw && l.Digest.Validate() == nil {
		// A raw layer nobody named: a documented name from its digest
		// (docs/format.md, "What modelreg reads").
		f.Path = "untitled-" + l.Digest.Encoded()[:12]
	}
	if f.Path == "" && f.Encoding == mediatypes.EncodingRaw {
		return f, fmt.Errorf("no file path: set the %s (or %s) annotation on the layer", mediatypes.AnnotationFilepath, mediatypes.AnnotationTitle)
	}
	if f.Path != "" {
		if err := CheckPath(f.Path); err != nil {
			return f, err
		}
	}
	if s, ok := l.Annotations[mediatypes.AnnotationFileMode]; ok {
		// Only the permission bits are accepted: a setuid, setgid or
		// sticky bit (04755) is refused, never restored.
		mode, err := strconv.ParseUint(s, 8, 32)
		if err != nil || mode > 0o777 {
			return f, fmt.Errorf("annotation %s=%q is not an octal permission (0644)", mediatypes.AnnotationFileMode, s)
		}
		f.Mode = fs.FileMode(mode)
	}
	return f, nil
}

// untitled says whether a layer carries no name of its own.
func untitled(l ocispec.Descriptor) bool {
	for _, key := range []string{mediatypes.AnnotationFilepath, mediatypes.LegacyAnnotationFilepath, mediatypes.AnnotationTitle} {
		if l.Annotations[key] != "" {
			return false
		}
	}
	return true
}

// dockerModelFileName names the untitled layers of a Docker model artifact
// by their media type (docs/format.md).
func dockerModelFileName(mediaType string) string {
	switch {
	case strings.HasSuffix(mediaType, ".gguf.v3"):
		return "model.gguf"
	case strings.HasSuffix(mediaType, ".safetensors"):
		return "model.safetensors"
	case strings.HasSuffix(mediaType, ".license"):
		return "LICENSE"
	case strings.HasSuffix(mediaType, ".mmproj"):
		return "model.mmproj"
	case strings.Contains(mediaType, ".chat.template"):
		return "template.jinja"
	}
	return ""
}
