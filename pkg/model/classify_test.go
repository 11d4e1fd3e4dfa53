package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const modelBody = `{"schemaVersion":2,%s"config":{"mediaType":"%s","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.cncf.model.weight.v1.raw","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"org.opencontainers.image.title":"w.bin"}}]%s}`

func body(mediaType, config, artifactType string) string {
	mt := ""
	if mediaType != "" {
		mt = `"mediaType":"` + mediaType + `",`
	}
	at := ""
	if artifactType != "" {
		at = `,"artifactType":"` + artifactType + `"`
	}
	return sprintf(modelBody, mt, config, at)
}

func sprintf(f string, args ...string) string {
	for _, a := range args {
		f = strings.Replace(f, "%s", a, 1)
	}
	return f
}

// The attacks of the chain-of-custody review: each is a model to the
// reader, so it must be a model to the gate.
func TestClassifyManifestAttacks(t *testing.T) {
	for _, c := range []struct {
		name, contentType, body string
		want                    Kind
	}{
		{"legacy unsigned artifactType", ocispec.MediaTypeImageManifest, body("", ocispec.MediaTypeEmptyJSON, "application/vnd.cnai.model.unsigned"), KindModel},
		{"charset parameter, no mediaType in body", ocispec.MediaTypeImageManifest + "; charset=utf-8", body("", mediatypes.ModelConfig, ""), KindModel},
		{"upper case Content-Type", strings.ToUpper(ocispec.MediaTypeImageManifest), body("", mediatypes.ModelConfig, ""), KindModel},
		{"Docker schema2 with a ModelPack config", DockerManifest, body(DockerManifest, mediatypes.ModelConfig, ""), KindModel},
		{"OCI index", ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, KindIndex},
		{"Docker manifest list", DockerManifestList, `{"schemaVersion":2,"mediaType":"` + DockerManifestList + `","manifests":[]}`, KindIndex},
		{"container image", ocispec.MediaTypeImageManifest, body("", ocispec.MediaTypeImageConfig, ""), KindImage},
		{"schema 1", "application/vnd.docker.distribution.manifest.v1+prettyjws", `{"schemaVersion":1}`, KindOther},
		{"stored without mediaType, served as index", "", `{"schemaVersion":2,"manifests":[]}`, KindIndex},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ClassifyManifest(c.contentType, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != c.want {
				t.Errorf("kind %s, want %s", got.Kind, c.want)
			}
			_, perr := Parse(ocispec.Descriptor{MediaType: c.contentType, Digest: digest.FromString(c.body)}, []byte(c.body))
			if reads := !errors.Is(perr, ErrNotModel) && perr == nil; reads != (c.want == KindModel) {
				t.Errorf("Parse reads it as a model: %v (err %v), classification says %s", reads, perr, got.Kind)
			}
		})
	}
}

func TestClassifyManifestMismatch(t *testing.T) {
	_, err := ClassifyManifest(ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"mediaType":"`+ocispec.MediaTypeImageIndex+`","manifests":[]}`))
	if !errors.Is(err, ErrMediaTypeMismatch) {
		t.Fatalf("got %v, want a media type mismatch", err)
	}
}

// FuzzClassifyManifest checks that the reader and the gate agree: whatever
// Parse reads as a model, ClassifyManifest calls a model, and the other way
// round Parse never answers "not a model" for a KindModel manifest.
func FuzzClassifyManifest(f *testing.F) {
	for _, ct := range []string{"", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageManifest + "; charset=utf-8", "APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON", DockerManifest, ocispec.MediaTypeImageIndex, "text/plain"} {
		for _, b := range []string{
			body("", mediatypes.ModelConfig, ""), body("", ocispec.MediaTypeEmptyJSON, "application/vnd.cnai.model.x"),
			body(DockerManifest, mediatypes.KitOpsConfig, ""), body(ocispec.MediaTypeImageManifest, "a/b", mediatypes.ArtifactTypeModel),
			`{"schemaVersion":2,"manifests":[]}`, `{}`, `[]`,
		} {
			f.Add(ct, b)
		}
	}
	f.Fuzz(func(t *testing.T, contentType, raw string) {
		c, cerr := ClassifyManifest(contentType, []byte(raw))
		_, perr := Parse(ocispec.Descriptor{MediaType: contentType, Digest: digest.FromString(raw)}, []byte(raw))
		gateSaysModel := cerr == nil && c.Kind == KindModel
		if perr == nil && !gateSaysModel {
			t.Fatalf("Parse reads %q (%s) as a model, the gate sees %v (err %v)", raw, contentType, c.Kind, cerr)
		}
		if gateSaysModel && errors.Is(perr, ErrNotModel) {
			t.Fatalf("the gate sees a model in %q (%s), Parse says %v", raw, contentType, perr)
		}
	})
}
