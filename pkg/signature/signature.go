// Package signature writes and finds cosign signatures of a model version
// in the three forms cosign produces: the legacy sha256-<hex>.sig tag
// (cosign v2's default), the same payload as an OCI 1.1 referrer (cosign
// --registry-referrers-mode=oci-1-1), and a sigstore bundle referrer
// (cosign v3's default). Everything is offline: keys only, no Rekor, no
// Fulcio. See docs/signing.md for why this is written against the formats
// rather than through the cosign Go module.
package signature

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// Form is how a signature is stored.
type Form string

// The three forms cosign writes.
const (
	FormLegacy   Form = "legacy"   // sha256-<hex>.sig tag, simple-signing payload
	FormReferrer Form = "referrer" // OCI 1.1 referrer, simple-signing payload
	FormBundle   Form = "bundle"   // OCI 1.1 referrer, sigstore bundle with a DSSE envelope
)

// LegacyTag is the tag cosign uses for the legacy signatures of digest d.
func LegacyTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".sig"
}

// simpleSigning is cosign's signed payload in the legacy and referrer forms.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]string `json:"optional"`
}

// statement is an in-toto statement, with only the fields cosign's strict
// verifier accepts.
type statement struct {
	Type          string          `json:"_type"`
	Subject       []statementSubj `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate,omitempty"`
}

type statementSubj struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// envelope is a DSSE envelope.
type envelope struct {
	Payload     string `json:"payload"`
	PayloadType string `json:"payloadType"`
	Signatures  []struct {
		KeyID string `json:"keyid,omitempty"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

// bundle is a sigstore bundle v0.3 as cosign writes it for a key pair.
type bundle struct {
	MediaType            string `json:"mediaType"`
	VerificationMaterial struct {
		PublicKey *struct {
			Hint string `json:"hint"`
		} `json:"publicKey,omitempty"`
		Certificate json.RawMessage `json:"certificate,omitempty"`
	} `json:"verificationMaterial"`
	DSSEEnvelope     *envelope       `json:"dsseEnvelope,omitempty"`
	MessageSignature json.RawMessage `json:"messageSignature,omitempty"`
}

// PAE is DSSE's pre-authentication encoding: what a DSSE signature signs.
func PAE(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// SignOptions tunes Sign.
type SignOptions struct {
	// Form is FormBundle (the default) or FormLegacy.
	Form Form
	// Now stamps the bundle referrer; zero means time.Now.
	Now time.Time
}

// Sign signs subject (a manifest of repo, named by ref) with priv and stores
// the signature in the registry next to it.
func Sign(ctx context.Context, repo registry.Repository, ref registry.Reference, subject ocispec.Descriptor, priv key.Private, opts SignOptions) (ocispec.Descriptor, error) {
	switch opts.Form {
	case "", FormBundle:
		return signBundle(ctx, repo, subject, priv, opts)
	case FormLegacy:
		return signLegacy(ctx, repo, ref, subject, priv)
	}
	return ocispec.Descriptor{}, fmt.Errorf("signature format %q: expected bundle or legacy", opts.Form)
}

func signBundle(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, priv key.Private, opts SignOptions) (ocispec.Descriptor, error) {
	st, err := json.Marshal(statement{
		Type:          mediatypes.InTotoStatementV1,
		Subject:       []statementSubj{{Digest: map[string]string{subject.Digest.Algorithm().String(): subject.Digest.Encoded()}}},
		PredicateType: mediatypes.PredicateCosignSign,
		Predicate:     json.RawMessage(`{}`),
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return Attest(ctx, repo, subject, priv, mediatypes.PredicateCosignSign, st, opts.Now)
}

// Attest signs an in-toto statement (predicateType names its predicate)
// with priv and attaches it to subject as a sigstore bundle referrer, as
// cosign v3 does for `cosign attest`: `cosign verify-attestation` checks it.
func Attest(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, priv key.Private, predicateType string, statement []byte, now time.Time) (ocispec.Descriptor, error) {
	sig, err := priv.Sign(PAE(mediatypes.InTotoPayloadType, statement))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var b bundle
	b.MediaType = mediatypes.SigstoreBundle
	b.VerificationMaterial.PublicKey = &struct {
		Hint string `json:"hint"`
	}{Hint: priv.Hint()}
	b.DSSEEnvelope = &envelope{Payload: base64.StdEncoding.EncodeToString(statement), PayloadType: mediatypes.InTotoPayloadType}
	b.DSSEEnvelope.Signatures = append(b.DSSEEnvelope.Signatures, struct {
		KeyID string `json:"keyid,omitempty"`
		Sig   string `json:"sig"`
	}{Sig: base64.StdEncoding.EncodeToString(sig)})
	blob, err := json.Marshal(b)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if now.IsZero() {
		now = time.Now()
	}
	return PushReferrer(ctx, repo, subject, mediatypes.SigstoreBundle, mediatypes.SigstoreBundle, blob, map[string]string{
		mediatypes.AnnotationBundleContent:       "dsse-envelope",
		mediatypes.AnnotationBundlePredicateType: predicateType,
		mediatypes.AnnotationCreated:             now.UTC().Format(time.RFC3339),
	})
}

// PushReferrer stores one blob as a referrer of subject: an image manifest
// with the empty config, the blob as its only layer, and subject set.
// oras-go keeps the referrers tag schema index up to date on registries
// without the Referrers API.
func PushReferrer(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, artifactType, layerType string, blob []byte, annotations map[string]string) (ocispec.Descriptor, error) {
	empty := ocispec.DescriptorEmptyJSON
	layer := ocispec.Descriptor{MediaType: layerType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	for _, b := range []struct {
		d ocispec.Descriptor
		c []byte
	}{{empty, empty.Data}, {layer, blob}} {
		if err := pushBlob(ctx, repo, b.d, b.c); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	sub := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	m, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size},
		Layers: []ocispec.Descriptor{layer}, Subject: &sub, Annotations: annotations,
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType, Digest: digest.FromBytes(m), Size: int64(len(m)), Annotations: annotations}
	if err := repo.Manifests().Push(ctx, desc, bytes.NewReader(m)); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

func pushBlob(ctx context.Context, repo registry.Repository, d ocispec.Descriptor, b []byte) error {
	if ok, err := repo.Blobs().Exists(ctx, d); err == nil && ok {
		return nil
	}
	err := repo.Blobs().Push(ctx, d, bytes.NewReader(b))
	if err != nil && strings.Contains(err.Error(), "already exists") {
		return nil
	}
	return err
}

// signLegacy appends a layer to the sha256-<hex>.sig manifest, keeping the
// signatures already there.
func signLegacy(ctx context.Context, repo registry.Repository, ref registry.Reference, subject ocispec.Descriptor, priv key.Private) (ocispec.Descriptor, error) {
	var p simpleSigning
	p.Critical.Identity.DockerReference = ref.Registry + "/" + ref.Repository
	p.Critical.Image.DockerManifestDigest = subject.Digest.String()
	p.Critical.Type = mediatypes.CosignSimpleSigningType
	payload, err := json.Marshal(p)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	sig, err := priv.Sign(payload)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := ocispec.Descriptor{MediaType: mediatypes.CosignSimpleSigning, Digest: digest.FromBytes(payload), Size: int64(len(payload)),
		Annotations: map[string]string{mediatypes.AnnotationCosignSignature: base64.StdEncoding.EncodeToString(sig)}}
	tag := LegacyTag(subject.Digest)
	var layers []ocispec.Descriptor
	if old, err := fetchManifest(ctx, repo, tag); err == nil {
		layers = old.Layers
	} else if !remote.IsNotFound(err) {
		return ocispec.Descriptor{}, err
	}
	layers = append(layers, layer)
	if err := pushBlob(ctx, repo, layer, payload); err != nil {
		return ocispec.Descriptor{}, err
	}
	// The config cosign writes (go-containerregistry's empty image with one
	// diff_id per layer); verifiers do not read it, but registries need it.
	diffIDs := make([]string, len(layers))
	history := make([]map[string]string, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.Digest.String()
		history[i] = map[string]string{"created": "0001-01-01T00:00:00Z"}
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": "", "created": "0001-01-01T00:00:00Z", "history": history, "os": "",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}, "config": map[string]any{},
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if err := pushBlob(ctx, repo, cdesc, cfg); err != nil {
		return ocispec.Descriptor{}, err
	}
	m, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cdesc, Layers: layers})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	return desc, repo.PushReference(ctx, desc, bytes.NewReader(m), tag)
}

// fetchManifest reads and verifies a manifest by tag or digest.
func fetchManifest(ctx context.Context, repo registry.Repository, reference string) (*ocispec.Manifest, error) {
	desc, rc, err := repo.FetchReference(ctx, reference)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	raw, err := content.ReadAll(rc, desc)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	return &m, nil
}

// fetchBlob reads a small blob and verifies it against its descriptor.
func fetchBlob(ctx context.Context, repo registry.Repository, d ocispec.Descriptor) ([]byte, error) {
	if d.Size > 4<<20 {
		return nil, fmt.Errorf("blob %s is %d bytes, too large for a signature", d.Digest, d.Size)
	}
	return content.FetchAll(ctx, repo.Blobs(), d)
}

// Referrer is a referrer as PushReferrer writes it: one small layer.
type Referrer struct {
	Descriptor ocispec.Descriptor
	Manifest   ocispec.Manifest
	// Blob is the layer's content, nil when Malformed.
	Blob []byte
	// Malformed is true when the manifest is not JSON or has other than
	// one layer of at most 1 MiB.
	Malformed bool
}

// ReadReferrers lists the referrers of subject with artifactType (also on
// registries that ignore the filter) and reads each one's layer, verified.
func ReadReferrers(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, artifactType string) ([]Referrer, error) {
	var refs []ocispec.Descriptor
	err := repo.Referrers(ctx, subject, artifactType, func(page []ocispec.Descriptor) error {
		refs = append(refs, page...)
		return nil
	})
	if err != nil && !remote.IsNotFound(err) {
		return nil, err
	}
	var out []Referrer
	for _, d := range refs {
		if d.ArtifactType != artifactType {
			continue
		}
		r := Referrer{Descriptor: d}
		raw, err := content.FetchAll(ctx, repo.Manifests(), d)
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		if json.Unmarshal(raw, &r.Manifest) != nil || len(r.Manifest.Layers) != 1 || r.Manifest.Layers[0].Size > 1<<20 {
			r.Malformed = true
			out = append(out, r)
			continue
		}
		if r.Blob, err = content.FetchAll(ctx, repo.Blobs(), r.Manifest.Layers[0]); err != nil {
			return nil, fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		out = append(out, r)
	}
	return out, nil
}
