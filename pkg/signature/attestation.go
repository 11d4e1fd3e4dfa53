package signature

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"oras.land/oras-go/v2"
)

// Attestation is a signed in-toto statement about a version, in either
// form cosign writes: a sigstore bundle referrer (cosign v3) or a DSSE
// layer of the sha256-<hex>.att tag (cosign v2).
type Attestation struct {
	Form          Form   `json:"form"`
	Source        string `json:"source"`
	PredicateType string `json:"predicateType"`
	// Key is the fingerprint of the trusted key that verified it.
	Key     string `json:"key,omitempty"`
	Claimed string `json:"claimedKey,omitempty"`
	// Valid: a trusted key verified it and the statement is about this version.
	Valid   bool   `json:"valid"`
	Problem string `json:"problem,omitempty"`
	// Statement is the signed payload.
	Statement json.RawMessage `json:"statement,omitempty"`
}

// LegacyAttestationTag is the tag cosign v2 uses for attestations of d.
func LegacyAttestationTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".att"
}

// Attestations finds the attestations of subject whose predicate type is
// one of predicateTypes, and checks each against the trusted keys. It
// lists subject's referrers; AttestationsFrom reads a listing already made.
func Attestations(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, trusted []key.Public, predicateTypes ...string) ([]Attestation, error) {
	l, err := referrers.List(ctx, target, subject, referrers.ListOptions{})
	if err != nil {
		return nil, err
	}
	return AttestationsFrom(ctx, l, trusted, predicateTypes...)
}

// AttestationsFrom checks the attestations of l's subject: the DSSE layers
// of the legacy .att tag (read from l's target) and the bundle referrers
// of the listing. Bundles the listing labels with another predicate
// (signatures, mostly) are skipped unread; the rest are bounded like
// signatures (MaxSignatureReferrers, newest first), an entry with a
// Problem saying how many were left out.
func AttestationsFrom(ctx context.Context, l *referrers.Listing, trusted []key.Public, predicateTypes ...string) ([]Attestation, error) {
	var out []Attestation
	subject := l.Subject
	tag := LegacyAttestationTag(subject.Digest)
	_, m, err := referrers.FetchManifest(ctx, l.Target(), tag)
	switch {
	case err == nil:
		for i, layer := range m.Layers {
			if layer.MediaType != mediatypes.DSSEEnvelope || !slices.Contains(predicateTypes, layer.Annotations["predicateType"]) {
				continue
			}
			a := Attestation{Form: FormLegacy, Source: fmt.Sprintf("%s layer %d", tag, i), PredicateType: layer.Annotations["predicateType"]}
			blob, err := referrers.FetchBlob(ctx, l.Target(), layer)
			if err != nil {
				a.Problem = err.Error()
			} else {
				var env dsse.Envelope
				if err := json.Unmarshal(blob, &env); err != nil {
					a.Problem = "not a DSSE envelope"
				} else {
					checkEnvelope(ctx, &a, &env, subject, trusted)
				}
			}
			out = append(out, a)
		}
	case !remote.IsNotFound(err):
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}

	var items []*referrers.Item
	for _, it := range l.Of(referrers.KindAttestation, referrers.KindBundle) {
		if pt := it.Descriptor.Annotations[mediatypes.AnnotationBundlePredicateType]; pt == "" || slices.Contains(predicateTypes, pt) {
			items = append(items, it)
		}
	}
	referrers.SortNewestFirst(items, time.Now())
	if n := len(items) - MaxSignatureReferrers; n > 0 {
		items = items[:MaxSignatureReferrers]
		out = append(out, Attestation{Form: FormBundle, Source: "referrers of " + subject.Digest.String(),
			Problem: fmt.Sprintf("%d more attestation referrers were not examined: at most %d are, newest first (docs/signing.md)", n, MaxSignatureReferrers)})
	}
	for _, it := range items {
		m, err := it.Manifest(ctx)
		if err != nil {
			if errors.Is(err, referrers.ErrMalformed) {
				continue // junk: nothing an attestation can be read from
			}
			return nil, err
		}
		pt := m.Annotations[mediatypes.AnnotationBundlePredicateType]
		if len(m.Layers) != 1 || !slices.Contains(predicateTypes, pt) {
			continue
		}
		a := Attestation{Form: FormBundle, Source: "referrer " + it.Descriptor.Digest.String(), PredicateType: pt}
		blob, err := it.Fetch(ctx, m.Layers[0])
		var b bundle
		switch {
		case err != nil:
			a.Problem = err.Error()
		case json.Unmarshal(blob, &b) != nil || b.DSSEEnvelope == nil:
			a.Problem = "not a DSSE bundle"
		default:
			if b.VerificationMaterial.PublicKey != nil {
				a.Claimed, _ = key.FingerprintFromHint(b.VerificationMaterial.PublicKey.Hint)
			}
			checkEnvelope(ctx, &a, b.DSSEEnvelope, subject, trusted)
		}
		out = append(out, a)
	}
	return out, nil
}

// checkEnvelope verifies a DSSE envelope and its statement's subject.
func checkEnvelope(ctx context.Context, a *Attestation, env *dsse.Envelope, subject ocispec.Descriptor, trusted []key.Public) {
	payload, err := env.DecodeB64Payload()
	if err != nil || len(env.Signatures) == 0 {
		a.Problem = "the envelope has no payload or no signature"
		return
	}
	a.Statement = payload
	if a.Key = verifyEnvelope(ctx, env, trusted); a.Key == "" {
		if a.Claimed != "" {
			a.Problem = fmt.Sprintf("signed by key %s, which is not trusted here, or altered", a.Claimed)
		} else {
			a.Problem = "no trusted key verifies it (made by another key, or altered)"
		}
		return
	}
	var st statement
	if err := json.Unmarshal(payload, &st); err != nil {
		a.Problem = "the statement is not JSON"
		return
	}
	if st.PredicateType != a.PredicateType && a.PredicateType != "" {
		a.Problem = fmt.Sprintf("the statement's predicate %s differs from its label %s", st.PredicateType, a.PredicateType)
		return
	}
	a.PredicateType = st.PredicateType
	if st.about(subject) {
		a.Valid = true
		return
	}
	a.Problem = fmt.Sprintf("the statement is about %s, not this version", st.subjects())
}
