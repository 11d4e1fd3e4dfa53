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
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
)

// Found is one signature of a version and what checking it showed.
type Found struct {
	Form Form `json:"form"`
	// Source locates the signature: the .sig tag and layer, or the
	// referrer manifest's digest.
	Source string `json:"source"`
	// Key is the fingerprint of the trusted key that verified it.
	Key string `json:"key,omitempty"`
	// Claimed is the signer's fingerprint as the signature names it
	// (a bundle's key hint); legacy signatures name none.
	Claimed string `json:"claimedKey,omitempty"`
	// Valid is true when a trusted key verified the signature and the
	// signed payload names this version's digest.
	Valid bool `json:"valid"`
	// Problem says why Valid is false.
	Problem string `json:"problem,omitempty"`
}

// MaxSignatureReferrers caps, per version, the signatures examined in each
// place they are stored: the signature referrers (cosign's OCI 1.1
// referrer and sigstore bundle forms together), and the layers of the
// legacy sha256-<hex>.sig tag. Each examined signature costs a manifest
// read, a blob read and a verification; without a cap, junk signatures
// pushed by anyone with push rights (3,000 of them in the security review)
// held a stage's lock for seconds while the server read them all. A
// version gets one signature per approver and a few re-signs in practice,
// far below 256; when the cap is hit, Search says how many were left
// unexamined, and newer signatures are examined first.
const MaxSignatureReferrers = 256

// Result is what Search found.
type Result struct {
	Found []Found `json:"signatures"`
	// NotExamined counts the signatures beyond the cap that were not read
	// (referrers and legacy layers together); 0 when all were.
	NotExamined int `json:"notExamined,omitempty"`
}

// Note says, for people, what was not examined; "" when everything was.
func (r Result) Note() string {
	if r.NotExamined == 0 {
		return ""
	}
	return fmt.Sprintf("%d more signatures of this version were not examined: at most %d signature referrers and %d legacy .sig layers are, newest first (docs/signing.md)",
		r.NotExamined, MaxSignatureReferrers, MaxSignatureReferrers)
}

// Find lists the signatures of subject in all three forms and checks each
// against the trusted keys, at most MaxSignatureReferrers of each kind
// (see Search, which also says how many were left out). A signature no
// trusted key verifies is listed with its problem, so a refusal can say
// what was found.
func Find(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, trusted []key.Public) ([]Found, error) {
	r, err := Search(ctx, repo, subject, trusted, MaxSignatureReferrers)
	return r.Found, err
}

// Search is Find with the cap given (0 or less: MaxSignatureReferrers).
// Signature referrers are examined newest first by their
// org.opencontainers.image.created annotation (a time more than a day
// ahead counts as none: it cannot push real signatures out), then by
// digest; legacy layers last-appended first. Bundle referrers whose
// listing already says they are attestations are skipped unread and do
// not count.
func Search(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, trusted []key.Public, limit int) (Result, error) {
	if limit <= 0 {
		limit = MaxSignatureReferrers
	}
	var res Result
	tag := LegacyTag(subject.Digest)
	m, err := fetchManifest(ctx, repo, tag)
	switch {
	case err == nil:
		examined := 0
		for i := len(m.Layers) - 1; i >= 0; i-- {
			l := m.Layers[i]
			if l.MediaType != mediatypes.CosignSimpleSigning {
				continue
			}
			if examined == limit {
				res.NotExamined++
				continue
			}
			examined++
			res.Found = append(res.Found, checkSimple(ctx, repo, l, subject, trusted, FormLegacy, fmt.Sprintf("%s layer %d", tag, i)))
		}
	case !remote.IsNotFound(err):
		return res, fmt.Errorf("reading %s: %w", tag, err)
	}

	var refs []ocispec.Descriptor
	err = repo.Referrers(ctx, subject, "", func(page []ocispec.Descriptor) error {
		for _, r := range page {
			if isSignatureReferrer(r) {
				refs = append(refs, r)
			}
		}
		return nil
	})
	if err != nil && !remote.IsNotFound(err) {
		return res, fmt.Errorf("listing referrers of %s: %w", subject.Digest, err)
	}
	newestFirst(refs, time.Now())
	if len(refs) > limit {
		res.NotExamined += len(refs) - limit
		refs = refs[:limit]
	}
	for _, r := range refs {
		switch r.ArtifactType {
		case mediatypes.ArtifactTypeCosignSignature:
			m, err := fetchManifest(ctx, repo, r.Digest.String())
			if err != nil {
				return res, err
			}
			for i, l := range m.Layers {
				if l.MediaType == mediatypes.CosignSimpleSigning {
					res.Found = append(res.Found, checkSimple(ctx, repo, l, subject, trusted, FormReferrer, fmt.Sprintf("referrer %s layer %d", r.Digest, i)))
				}
			}
		case mediatypes.SigstoreBundle:
			m, err := fetchManifest(ctx, repo, r.Digest.String())
			if err != nil {
				return res, err
			}
			if len(m.Layers) != 1 || !strings.HasPrefix(m.Layers[0].MediaType, "application/vnd.dev.sigstore.bundle") {
				continue
			}
			if pt := m.Annotations[mediatypes.AnnotationBundlePredicateType]; pt != "" && pt != mediatypes.PredicateCosignSign {
				continue // an attestation (lineage, provenance), not a signature
			}
			res.Found = append(res.Found, checkBundle(ctx, repo, m.Layers[0], subject, trusted, "referrer "+r.Digest.String()))
		}
	}
	return res, nil
}

// isSignatureReferrer tells, from the listing alone, the referrers that
// may be signatures: cosign's signature referrers, and bundles not labelled
// as an attestation (a bundle without the label is read to find out).
func isSignatureReferrer(d ocispec.Descriptor) bool {
	switch d.ArtifactType {
	case mediatypes.ArtifactTypeCosignSignature:
		return true
	case mediatypes.SigstoreBundle:
		pt := d.Annotations[mediatypes.AnnotationBundlePredicateType]
		return pt == "" || pt == mediatypes.PredicateCosignSign
	}
	return false
}

// futureSkew is how far ahead of now a creation time may be and still be
// believed.
const futureSkew = 24 * time.Hour

// newestFirst orders referrers by their creation annotation, newest first;
// those without one, with an unreadable one or one too far in the future
// come last; ties by digest, so the order does not depend on the registry.
func newestFirst(refs []ocispec.Descriptor, now time.Time) {
	created := func(d ocispec.Descriptor) time.Time {
		t, err := time.Parse(time.RFC3339Nano, d.Annotations[mediatypes.AnnotationCreated])
		if err != nil || t.After(now.Add(futureSkew)) {
			return time.Time{}
		}
		return t
	}
	slices.SortStableFunc(refs, func(a, b ocispec.Descriptor) int {
		if c := created(b).Compare(created(a)); c != 0 {
			return c
		}
		return strings.Compare(string(a.Digest), string(b.Digest))
	})
}

func checkSimple(ctx context.Context, repo registry.Repository, l ocispec.Descriptor, subject ocispec.Descriptor, trusted []key.Public, form Form, source string) Found {
	f := Found{Form: form, Source: source}
	payload, err := fetchBlob(ctx, repo, l)
	if err != nil {
		f.Problem = fmt.Sprintf("cannot read the signed payload: %v", err)
		return f
	}
	sig, err := base64.StdEncoding.DecodeString(l.Annotations[mediatypes.AnnotationCosignSignature])
	if err != nil || len(sig) == 0 {
		f.Problem = "no signature in the " + mediatypes.AnnotationCosignSignature + " annotation"
		return f
	}
	for _, k := range trusted {
		if k.Verify(payload, sig) {
			f.Key = k.Fingerprint
			break
		}
	}
	if f.Key == "" {
		f.Problem = "no trusted key verifies this signature: it was made by another key (legacy signatures do not name their key), or the payload was altered"
		return f
	}
	var p simpleSigning
	if err := json.Unmarshal(payload, &p); err != nil {
		f.Problem = "the signed payload is not cosign's simple-signing JSON"
		return f
	}
	if p.Critical.Image.DockerManifestDigest != subject.Digest.String() {
		f.Problem = fmt.Sprintf("the signed payload is for %s, not for this version", p.Critical.Image.DockerManifestDigest)
		return f
	}
	f.Valid = true
	return f
}

func checkBundle(ctx context.Context, repo registry.Repository, l ocispec.Descriptor, subject ocispec.Descriptor, trusted []key.Public, source string) Found {
	f := Found{Form: FormBundle, Source: source}
	blob, err := fetchBlob(ctx, repo, l)
	if err != nil {
		f.Problem = fmt.Sprintf("cannot read the bundle: %v", err)
		return f
	}
	var b bundle
	if err := json.Unmarshal(blob, &b); err != nil {
		f.Problem = "the bundle is not valid JSON"
		return f
	}
	if b.VerificationMaterial.PublicKey != nil {
		f.Claimed, _ = key.FingerprintFromHint(b.VerificationMaterial.PublicKey.Hint)
	}
	if b.DSSEEnvelope == nil {
		f.Problem = "the bundle holds no DSSE envelope (certificate or message-signature bundles are not supported offline)"
		return f
	}
	env := b.DSSEEnvelope
	if len(env.Signatures) != 1 {
		f.Problem = fmt.Sprintf("the envelope has %d signatures, expected exactly 1", len(env.Signatures))
		return f
	}
	payload, err1 := base64.StdEncoding.DecodeString(env.Payload)
	sig, err2 := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err1 != nil || err2 != nil {
		f.Problem = "the envelope's payload or signature is not base64"
		return f
	}
	// A bundle names its key (publicKey.hint, as cosign and modelreg write
	// it): one naming a key outside the policy is refused without any
	// cryptography, one naming a policy key is verified with that key only.
	candidates := trusted
	if f.Claimed != "" {
		candidates = nil
		for _, k := range trusted {
			if k.Fingerprint == f.Claimed {
				candidates = append(candidates, k)
			}
		}
	}
	pae := PAE(env.PayloadType, payload)
	for _, k := range candidates {
		if k.Verify(pae, sig) {
			f.Key = k.Fingerprint
			break
		}
	}
	if f.Key == "" {
		switch {
		case f.Claimed != "" && !slices.ContainsFunc(trusted, func(k key.Public) bool { return k.Fingerprint == f.Claimed }):
			f.Problem = fmt.Sprintf("signed by key %s, which is not trusted here", f.Claimed)
		case f.Claimed != "":
			f.Problem = fmt.Sprintf("names trusted key %s but its signature does not verify: the bundle was altered", f.Claimed)
		default:
			f.Problem = "no trusted key verifies this signature"
		}
		return f
	}
	if env.PayloadType != mediatypes.InTotoPayloadType {
		f.Problem = fmt.Sprintf("payload type %q is not an in-toto statement", env.PayloadType)
		return f
	}
	var st statement
	if err := json.Unmarshal(payload, &st); err != nil {
		f.Problem = "the signed statement is not valid JSON"
		return f
	}
	if st.PredicateType != mediatypes.PredicateCosignSign {
		f.Problem = fmt.Sprintf("an attestation (predicate %s), not a signature", st.PredicateType)
		return f
	}
	for _, s := range st.Subject {
		if s.Digest[subject.Digest.Algorithm().String()] == subject.Digest.Encoded() {
			f.Valid = true
			return f
		}
	}
	var names []string
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			names = append(names, alg+":"+hex)
		}
	}
	f.Problem = fmt.Sprintf("the signed statement is for %s, not for this version", strings.Join(names, ", "))
	return f
}
