package signature

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
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
// one of predicateTypes, and checks each against the trusted keys.
func Attestations(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, trusted []key.Public, predicateTypes ...string) ([]Attestation, error) {
	var out []Attestation
	tag := LegacyAttestationTag(subject.Digest)
	m, err := fetchManifest(ctx, repo, tag)
	switch {
	case err == nil:
		for i, l := range m.Layers {
			if l.MediaType != mediatypes.DSSEEnvelope || !slices.Contains(predicateTypes, l.Annotations["predicateType"]) {
				continue
			}
			a := Attestation{Form: FormLegacy, Source: fmt.Sprintf("%s layer %d", tag, i), PredicateType: l.Annotations["predicateType"]}
			blob, err := fetchBlob(ctx, repo, l)
			if err != nil {
				a.Problem = err.Error()
			} else {
				var env envelope
				if err := json.Unmarshal(blob, &env); err != nil {
					a.Problem = "not a DSSE envelope"
				} else {
					checkEnvelope(&a, &env, subject, trusted)
				}
			}
			out = append(out, a)
		}
	case !remote.IsNotFound(err):
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	var refs []ocispec.Descriptor
	err = repo.Referrers(ctx, subject, mediatypes.SigstoreBundle, func(page []ocispec.Descriptor) error {
		for _, r := range page {
			// The listing carries the bundle's predicate label: bundles
			// labelled with another predicate (signatures, mostly) are
			// skipped unread.
			if pt, ok := r.Annotations[mediatypes.AnnotationBundlePredicateType]; r.ArtifactType == mediatypes.SigstoreBundle && (!ok || slices.Contains(predicateTypes, pt)) {
				refs = append(refs, r)
			}
		}
		return nil
	})
	if err != nil && !remote.IsNotFound(err) {
		return nil, fmt.Errorf("listing referrers of %s: %w", subject.Digest, err)
	}
	// Bounded like signatures (MaxSignatureReferrers), newest first.
	newestFirst(refs, time.Now())
	if n := len(refs) - MaxSignatureReferrers; n > 0 {
		refs = refs[:MaxSignatureReferrers]
		out = append(out, Attestation{Form: FormBundle, Source: "referrers of " + subject.Digest.String(),
			Problem: fmt.Sprintf("%d more attestation referrers were not examined: at most %d are, newest first (docs/signing.md)", n, MaxSignatureReferrers)})
	}
	for _, r := range refs {
		m, err := fetchManifest(ctx, repo, r.Digest.String())
		if err != nil {
			return nil, err
		}
		pt := m.Annotations[mediatypes.AnnotationBundlePredicateType]
		if len(m.Layers) != 1 || !slices.Contains(predicateTypes, pt) {
			continue
		}
		a := Attestation{Form: FormBundle, Source: "referrer " + r.Digest.String(), PredicateType: pt}
		blob, err := fetchBlob(ctx, repo, m.Layers[0])
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
			checkEnvelope(&a, b.DSSEEnvelope, subject, trusted)
		}
		out = append(out, a)
	}
	return out, nil
}

// checkEnvelope verifies a DSSE envelope and its statement's subject.
func checkEnvelope(a *Attestation, env *envelope, subject ocispec.Descriptor, trusted []key.Public) {
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil || len(env.Signatures) == 0 {
		a.Problem = "the envelope has no payload or no signature"
		return
	}
	a.Statement = payload
	pae := PAE(env.PayloadType, payload)
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			continue
		}
		for _, k := range trusted {
			if k.Verify(pae, sig) {
				a.Key = k.Fingerprint
			}
		}
	}
	if a.Key == "" {
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
	for _, s := range st.Subject {
		if s.Digest[subject.Digest.Algorithm().String()] == subject.Digest.Encoded() {
			a.Valid = true
			return
		}
	}
	var names []string
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			names = append(names, alg+":"+hex)
		}
	}
	a.Problem = fmt.Sprintf("the statement is about %s, not this version", strings.Join(names, ", "))
}
