// Package signature writes and finds cosign signatures of a model version
// in the three forms cosign produces: the legacy sha256-<hex>.sig tag
// (cosign v2's default), the same payload as an OCI 1.1 referrer (cosign
// --registry-referrers-mode=oci-1-1), and a sigstore bundle referrer
// (cosign v3's default). Everything is offline: keys only, no Rekor, no
// Fulcio. See docs/signing.md for why this is written against the formats
// rather than through the cosign Go module.
package signature

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"oras.land/oras-go/v2"
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

// about reports whether the statement names subject's digest.
func (st statement) about(subject ocispec.Descriptor) bool {
	for _, s := range st.Subject {
		if s.Digest[subject.Digest.Algorithm().String()] == subject.Digest.Encoded() {
			return true
		}
	}
	return false
}

// subjects lists the digests the statement names, for messages.
func (st statement) subjects() string {
	var names []string
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			names = append(names, alg+":"+hex)
		}
	}
	return strings.Join(names, ", ")
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
	DSSEEnvelope     *dsse.Envelope  `json:"dsseEnvelope,omitempty"`
	MessageSignature json.RawMessage `json:"messageSignature,omitempty"`
}

// SignOptions tunes Sign.
type SignOptions struct {
	// Form is FormBundle (the default) or FormLegacy.
	Form Form
	// Now stamps the bundle referrer; zero means time.Now.
	Now time.Time
}

// Sign signs subject (a manifest of target, named by ref) with priv and
// stores the signature next to it. target is a registry repository, an OCI
// layout or any other oras-go target.
func Sign(ctx context.Context, target oras.Target, ref registry.Reference, subject ocispec.Descriptor, priv key.Private, opts SignOptions) (ocispec.Descriptor, error) {
	switch opts.Form {
	case "", FormBundle:
		return signBundle(ctx, target, subject, priv, opts)
	case FormLegacy:
		return signLegacy(ctx, target, ref, subject, priv)
	}
	return ocispec.Descriptor{}, fmt.Errorf("signature format %q: expected bundle or legacy", opts.Form)
}

func signBundle(ctx context.Context, target content.Pusher, subject ocispec.Descriptor, priv key.Private, opts SignOptions) (ocispec.Descriptor, error) {
	st, err := json.Marshal(statement{
		Type:          mediatypes.InTotoStatementV1,
		Subject:       []statementSubj{{Digest: map[string]string{subject.Digest.Algorithm().String(): subject.Digest.Encoded()}}},
		PredicateType: mediatypes.PredicateCosignSign,
		Predicate:     json.RawMessage(`{}`),
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return Attest(ctx, target, subject, priv, mediatypes.PredicateCosignSign, st, opts.Now)
}

// Attest signs an in-toto statement (predicateType names its predicate)
// with priv and attaches it to subject as a sigstore bundle referrer, as
// cosign v3 does for `cosign attest`: `cosign verify-attestation` checks it.
func Attest(ctx context.Context, target content.Pusher, subject ocispec.Descriptor, priv key.Private, predicateType string, statement []byte, now time.Time) (ocispec.Descriptor, error) {
	env, err := signEnvelope(ctx, priv, mediatypes.InTotoPayloadType, statement)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var b bundle
	b.MediaType = mediatypes.SigstoreBundle
	b.VerificationMaterial.PublicKey = &struct {
		Hint string `json:"hint"`
	}{Hint: priv.Hint()}
	b.DSSEEnvelope = env
	blob, err := json.Marshal(b)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if now.IsZero() {
		now = time.Now()
	}
	return referrers.Push(ctx, target, subject, mediatypes.SigstoreBundle, mediatypes.SigstoreBundle, blob, map[string]string{
		mediatypes.AnnotationBundleContent:       "dsse-envelope",
		mediatypes.AnnotationBundlePredicateType: predicateType,
		mediatypes.AnnotationCreated:             now.UTC().Format(time.RFC3339),
	})
}

// PushReferrer is referrers.Push, kept under its old name for the callers
// that still use it (lineage.Write, promotion.Write, the end-to-end tests).
//
// Deprecated: use referrers.Push.
func PushReferrer(ctx context.Context, target content.Pusher, subject ocispec.Descriptor, artifactType, layerType string, blob []byte, annotations map[string]string) (ocispec.Descriptor, error) {
	return referrers.Push(ctx, target, subject, artifactType, layerType, blob, annotations)
}

// signLegacy appends a layer to the sha256-<hex>.sig manifest, keeping the
// signatures already there.
func signLegacy(ctx context.Context, target oras.Target, ref registry.Reference, subject ocispec.Descriptor, priv key.Private) (ocispec.Descriptor, error) {
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
	if _, old, err := referrers.FetchManifest(ctx, target, tag); err == nil {
		layers = old.Layers
	} else if !remote.IsNotFound(err) {
		return ocispec.Descriptor{}, err
	}
	layers = append(layers, layer)
	if err := referrers.PushBlob(ctx, target, layer, payload); err != nil {
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
	if err := referrers.PushBlob(ctx, target, cdesc, cfg); err != nil {
		return ocispec.Descriptor{}, err
	}
	m, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cdesc, Layers: layers})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	// One PUT with the tag where the target has it (a registry), else a
	// push and a tag.
	return oras.TagBytes(ctx, target, ocispec.MediaTypeImageManifest, m, tag)
}
