package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"

	"github.com/modelreg/modelreg/mediatypes"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Kind is what a manifest is. It is decided in one place, ClassifyManifest, so the
// reader (a pull), the server's gate, the index and the model API can never
// disagree about whether something is a model: a disagreement is a route
// around the gate.
type Kind int

const (
	// KindOther is a manifest modelreg does not know: Docker schema 1, an
	// unknown media type. A registry refuses most of them.
	KindOther Kind = iota
	// KindModel is an image manifest (OCI or Docker schema 2) whose
	// artifactType, or config media type, marks a model (mediatypes.ModelFormat).
	KindModel
	// KindImage is any other image manifest: a container image, a
	// signature, a record, an artifact of another tool.
	KindImage
	// KindIndex is an OCI image index or a Docker manifest list.
	KindIndex
)

func (k Kind) String() string {
	switch k {
	case KindModel:
		return "model version"
	case KindImage:
		return "image or artifact manifest"
	case KindIndex:
		return "image index"
	}
	return "unknown manifest"
}

// Docker manifest media types, which distribution accepts beside OCI's.
const (
	DockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Class is what ClassifyManifest reads from a manifest.
type Class struct {
	Kind Kind
	// MediaType is the manifest's media type as the registry stores and
	// serves it.
	MediaType string
	// ArtifactType is the manifest's artifactType, or its config media type
	// when it has none (what the Referrers API reports).
	ArtifactType string
	// Format is the model producer family for KindModel (mediatypes.ModelFormat).
	Format      string
	Config      ocispec.Descriptor
	Subject     *ocispec.Descriptor
	Annotations map[string]string
}

// ErrMediaTypeMismatch means a manifest's body names another media type
// than the one it was sent or served as.
var ErrMediaTypeMismatch = errors.New("manifest media type mismatch")

// ClassifyManifest reads a manifest the way distribution v3 does, so that what the
// gate decides is what the registry stores and what a reader later gets.
// contentType is the Content-Type it was sent with (or served with): it is
// parsed as a MIME type, so parameters and letter case do not matter
// ("Application/VND.OCI.image.manifest.v1+json; charset=utf-8" is an OCI
// manifest). When contentType is empty, the body's mediaType decides, and
// without one, the presence of "manifests" (an index), as distribution's
// storage does when it reads a manifest back.
func ClassifyManifest(contentType string, raw []byte) (Class, error) {
	var m struct {
		MediaType    string              `json:"mediaType"`
		ArtifactType string              `json:"artifactType"`
		Config       *ocispec.Descriptor `json:"config"`
		Subject      *ocispec.Descriptor `json:"subject"`
		Manifests    json.RawMessage     `json:"manifests"`
		Annotations  map[string]string   `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return Class{}, fmt.Errorf("manifest is not valid JSON: %w", err)
	}
	mt := ""
	if contentType != "" {
		parsed, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return Class{}, fmt.Errorf("Content-Type %q is not a media type: %w", contentType, err)
		}
		mt = parsed
	}
	switch {
	case mt == "" && m.MediaType != "":
		mt = m.MediaType
	case mt == "" && m.Manifests != nil:
		mt = ocispec.MediaTypeImageIndex
	case mt == "":
		mt = ocispec.MediaTypeImageManifest
	case m.MediaType != "" && m.MediaType != mt:
		return Class{}, fmt.Errorf("%w: sent as %s but its mediaType is %s", ErrMediaTypeMismatch, mt, m.MediaType)
	}
	c := Class{MediaType: mt, ArtifactType: m.ArtifactType, Subject: m.Subject, Annotations: m.Annotations}
	if m.Config != nil {
		c.Config = *m.Config
	}
	switch mt {
	case ocispec.MediaTypeImageIndex, DockerManifestList:
		c.Kind = KindIndex
	case ocispec.MediaTypeImageManifest, DockerManifest:
		if c.ArtifactType == "" {
			c.ArtifactType = c.Config.MediaType
		}
		c.Format = mediatypes.ModelFormat(c.ArtifactType)
		c.Kind = KindImage
		if c.Format != "" {
			c.Kind = KindModel
		}
	default:
		c.Kind = KindOther
	}
	return c, nil
}
