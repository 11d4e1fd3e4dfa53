package signature

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
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
	// Time is when the signature says it was made (its manifest's
	// org.opencontainers.image.created, as the signer wrote it: a claim,
	// not a timestamp authority's); "" for a legacy signature.
	Time string `json:"time,omitempty"`
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
func Find(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, trusted []key.Public) ([]Found, error) {
	r, err := Search(ctx, target, subject, trusted, MaxSignatureReferrers)
	return r.Found, err
}

// Search is Find with the cap given (0 or less: MaxSignatureReferrers).
// It lists subject's referrers; SearchFrom reads a listing already made.
func Search(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, trusted []key.Public, limit int) (Result, error) {
	l, err := referrers.List(ctx, target, subject, referrers.ListOptions{})
	if err != nil {
		return Result{}, err
	}
	return SearchFrom(ctx, l, trusted, limit)
}

// SearchFrom checks the signatures of l's subject: the layers of the
// legacy .sig tag (read from l's target), last appended first, and the
// signature referrers of the listing, newest first by their
// org.opencontainers.image.created annotation (see
// referrers.SortNewestFirst), at most limit of each. Bundle referrers
// whose listing already says they are attestations are skipped unread and
// do not count.
func SearchFrom(ctx context.Context, l *referrers.Listing, trusted []key.Public, limit int) (Result, error) {
	if limit <= 0 {
		limit = MaxSignatureReferrers
	}
	var res Result
	subject := l.Subject
	tag := LegacyTag(subject.Digest)
	_, m, err := referrers.FetchManifest(ctx, l.Target(), tag)
	switch {
	case err == nil:
		examined := 0
		for i := len(m.Layers) - 1; i >= 0; i-- {
			layer := m.Layers[i]
			if layer.MediaType != mediatypes.CosignSimpleSigning {
				continue
			}
			if examined == limit {
				res.NotExamined++
				continue
			}
			examined++
			payload, err := referrers.FetchBlob(ctx, l.Target(), layer)
			res.Found = append(res.Found, checkSimple(payload, err, layer, subject, trusted, FormLegacy, fmt.Sprintf("%s layer %d", tag, i)))
		}
	case !remote.IsNotFound(err):
		return res, fmt.Errorf("reading %s: %w", tag, err)
	}

	items := l.Of(referrers.KindSignature, referrers.KindBundle)
	referrers.SortNewestFirst(items, time.Now())
	if len(items) > limit {
		res.NotExamined += len(items) - limit
		items = items[:limit]
	}
	for _, it := range items {
		source := "referrer " + it.Descriptor.Digest.String()
		m, err := it.Manifest(ctx)
		if errors.Is(err, referrers.ErrMalformed) {
			res.Found = append(res.Found, Found{Form: formOf(it), Source: source, Problem: "the referrer's manifest is not valid JSON"})
			continue
		}
		if err != nil {
			return res, err
		}
		switch it.Descriptor.ArtifactType {
		case mediatypes.ArtifactTypeCosignSignature:
			for i, layer := range m.Layers {
				if layer.MediaType == mediatypes.CosignSimpleSigning {
					payload, err := it.Fetch(ctx, layer)
					f := checkSimple(payload, err, layer, subject, trusted, FormReferrer, fmt.Sprintf("%s layer %d", source, i))
					f.Time = m.Annotations[mediatypes.AnnotationCreated]
					res.Found = append(res.Found, f)
				}
			}
		case mediatypes.SigstoreBundle:
			if len(m.Layers) != 1 || !strings.HasPrefix(m.Layers[0].MediaType, "application/vnd.dev.sigstore.bundle") {
				continue
			}
			if pt := m.Annotations[mediatypes.AnnotationBundlePredicateType]; pt != "" && pt != mediatypes.PredicateCosignSign {
				continue // an attestation (lineage, provenance), not a signature
			}
			blob, err := it.Fetch(ctx, m.Layers[0])
			f := checkBundle(ctx, blob, err, subject, trusted, source)
			f.Time = m.Annotations[mediatypes.AnnotationCreated]
			res.Found = append(res.Found, f)
		}
	}
	return res, nil
}

func formOf(it *referrers.Item) Form {
	if it.Descriptor.ArtifactType == mediatypes.SigstoreBundle {
		return FormBundle
	}
	return FormReferrer
}

// checkSimple checks a simple-signing payload (read with err) against the
// signature in its layer's annotation.
func checkSimple(payload []byte, err error, l ocispec.Descriptor, subject ocispec.Descriptor, trusted []key.Public, form Form, source string) Found {
	f := Found{Form: form, Source: source}
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

// checkBundle checks a sigstore bundle (read with err): its DSSE envelope's
// one signature, by the key it names, over a cosign signature statement
// about subject.
func checkBundle(ctx context.Context, blob []byte, err error, subject ocispec.Descriptor, trusted []key.Public, source string) Found {
	f := Found{Form: FormBundle, Source: source}
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
	payload, err1 := env.DecodeB64Payload()
	_, err2 := decodeSig(env.Signatures[0].Sig)
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
	f.Key = verifyEnvelope(ctx, env, candidates)
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
	if st.about(subject) {
		f.Valid = true
		return f
	}
	f.Problem = fmt.Sprintf("the signed statement is for %s, not for this version", st.subjects())
	return f
}
