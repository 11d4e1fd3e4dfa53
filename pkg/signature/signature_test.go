package signature_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/referrers/referrerstest"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry"
)

var (
	ctx = context.Background()
	ref = registry.Reference{Registry: "r.example", Repository: "team/m"}
)

func newKey(t *testing.T) key.Private {
	t.Helper()
	privPEM, _, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := key.ParsePrivate(privPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pushSubject stores a small image manifest standing for a model version.
func pushSubject(t *testing.T, target oras.Target, name string) ocispec.Descriptor {
	t.Helper()
	layer := []byte(name)
	ld := content.NewDescriptorFromBytes("application/vnd.cncf.model.weight.v1.raw", layer)
	if err := target.Push(ctx, ld, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	d, err := oras.PackManifest(ctx, target, oras.PackManifestVersion1_1, mediatypes.ArtifactTypeModel, oras.PackManifestOptions{
		Layers: []ocispec.Descriptor{ld}, ManifestAnnotations: map[string]string{mediatypes.AnnotationCreated: "2026-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// simpleSigning is cosign's legacy payload for subject.
func simpleSigning(subject digest.Digest) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":"r.example/team/m"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, subject)
}

// signReferrer writes cosign v2's OCI 1.1 referrer form (form 3), which
// modelreg reads but does not write.
func signReferrer(t *testing.T, target oras.Target, subject ocispec.Descriptor, k key.Private, payload []byte, at time.Time) ocispec.Descriptor {
	t.Helper()
	sig, err := k.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	layer := ocispec.Descriptor{MediaType: mediatypes.CosignSimpleSigning, Digest: digest.FromBytes(payload), Size: int64(len(payload)),
		Annotations: map[string]string{mediatypes.AnnotationCosignSignature: base64.StdEncoding.EncodeToString(sig)}}
	if err := referrers.PushBlob(ctx, target, layer, payload); err != nil {
		t.Fatal(err)
	}
	sub := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	d, err := oras.PackManifest(ctx, target, oras.PackManifestVersion1_1, mediatypes.ArtifactTypeCosignSignature, oras.PackManifestOptions{
		Subject: &sub, Layers: []ocispec.Descriptor{layer}, ManifestAnnotations: map[string]string{mediatypes.AnnotationCreated: at.UTC().Format(time.RFC3339)}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// targets are the stores a signature is written to and found in: in
// memory, an OCI layout directory, and over HTTP a registry with the
// Referrers API and one without (read through the referrers tag schema).
func targets(t *testing.T) map[string]func(t *testing.T) oras.Target {
	return map[string]func(t *testing.T) oras.Target{
		"memory": func(t *testing.T) oras.Target { return memory.New() },
		"oci layout": func(t *testing.T) oras.Target {
			s, err := oci.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"referrers API": func(t *testing.T) oras.Target {
			return referrerstest.Start(t, true).Repository(t, "team/m")
		},
		"tag schema": func(t *testing.T) oras.Target {
			return referrerstest.Start(t, false).Repository(t, "team/m")
		},
	}
}

// Each form, written (bundle and legacy by Sign, the referrer form as
// cosign v2 writes it) and found, on every kind of target.
func TestSignAndFindEachForm(t *testing.T) {
	alice, bob, carol := newKey(t), newKey(t), newKey(t)
	trusted := []key.Public{alice.Public, bob.Public, carol.Public}
	for name, mk := range targets(t) {
		t.Run(name, func(t *testing.T) {
			target := mk(t)
			subject := pushSubject(t, target, "v1")
			if _, err := signature.Sign(ctx, target, ref, subject, alice, signature.SignOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := signature.Sign(ctx, target, ref, subject, bob, signature.SignOptions{Form: signature.FormLegacy}); err != nil {
				t.Fatal(err)
			}
			// A second legacy signature is appended to the same .sig manifest.
			if _, err := signature.Sign(ctx, target, ref, subject, carol, signature.SignOptions{Form: signature.FormLegacy}); err != nil {
				t.Fatal(err)
			}
			signReferrer(t, target, subject, carol, simpleSigning(subject.Digest), time.Now())

			found, err := signature.Find(ctx, target, subject, trusted)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, f := range found {
				if !f.Valid {
					t.Errorf("%s signature %s rejected: %s", f.Form, f.Source, f.Problem)
				}
				got[string(f.Form)+" "+f.Key] = true
			}
			for _, want := range []string{
				"bundle " + alice.Fingerprint, "legacy " + bob.Fingerprint, "legacy " + carol.Fingerprint, "referrer " + carol.Fingerprint,
			} {
				if !got[want] {
					t.Errorf("missing %s in %v", want, found)
				}
			}
			if len(found) != 4 {
				t.Errorf("%d signatures, want 4: %+v", len(found), found)
			}
			// Another version's signatures are not this one's.
			other := pushSubject(t, target, "v2")
			if found, err := signature.Find(ctx, target, other, trusted); err != nil || len(found) != 0 {
				t.Errorf("other version: %v, %v", found, err)
			}
		})
	}
}

// tamperedBundle re-attaches a bundle of subject with its statement
// edited (an extra subject added) and its signature kept.
func tamperedBundle(t *testing.T, target oras.Target, subject ocispec.Descriptor, k key.Private) {
	t.Helper()
	store := memory.New()
	d, err := signature.Sign(ctx, store, ref, subject, k, signature.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := content.FetchAll(ctx, store, d)
	var m ocispec.Manifest
	json.Unmarshal(raw, &m)
	blob, _ := content.FetchAll(ctx, store, m.Layers[0])
	var b map[string]any
	json.Unmarshal(blob, &b)
	env := b["dsseEnvelope"].(map[string]any)
	st, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	st = []byte(strings.Replace(string(st), `"subject":[`, `"subject":[{"digest":{"sha256":"`+strings.Repeat("0", 64)+`"}},`, 1))
	env["payload"] = base64.StdEncoding.EncodeToString(st)
	altered, _ := json.Marshal(b)
	if _, err := referrers.Push(ctx, target, subject, mediatypes.SigstoreBundle, mediatypes.SigstoreBundle, altered, m.Annotations); err != nil {
		t.Fatal(err)
	}
}

// What must never count: a tampered bundle, a tampered legacy payload,
// signatures by a key outside the policy in each form, a signature copied
// from another version, a bundle whose hint names another key than the one
// that signed.
func TestFindRejects(t *testing.T) {
	alice, mallory := newKey(t), newKey(t)
	trusted := []key.Public{alice.Public}
	cases := []struct {
		name    string
		write   func(t *testing.T, target oras.Target, subject, other ocispec.Descriptor)
		problem string
	}{
		{"tampered bundle", func(t *testing.T, target oras.Target, subject, _ ocispec.Descriptor) {
			tamperedBundle(t, target, subject, alice)
		}, "its signature does not verify: the bundle was altered"},
		{"bundle by another key", func(t *testing.T, target oras.Target, subject, _ ocispec.Descriptor) {
			signature.Sign(ctx, target, ref, subject, mallory, signature.SignOptions{})
		}, "which is not trusted here"},
		{"bundle naming another key", func(t *testing.T, target oras.Target, subject, _ ocispec.Descriptor) {
			signature.Sign(ctx, target, ref, subject, key.Private{Key: alice.Key, Public: mallory.Public}, signature.SignOptions{})
		}, "which is not trusted here"},
		{"legacy by another key", func(t *testing.T, target oras.Target, subject, _ ocispec.Descriptor) {
			signature.Sign(ctx, target, ref, subject, mallory, signature.SignOptions{Form: signature.FormLegacy})
		}, "no trusted key verifies this signature"},
		{"referrer by another key", func(t *testing.T, target oras.Target, subject, _ ocispec.Descriptor) {
			signReferrer(t, target, subject, mallory, simpleSigning(subject.Digest), time.Now())
		}, "no trusted key verifies this signature"},
		{"referrer with an altered payload", func(t *testing.T, target oras.Target, subject, _ ocispec.Descriptor) {
			payload := simpleSigning(subject.Digest)
			sig, _ := alice.Sign(payload)
			altered := bytes.Replace(payload, []byte(`"optional":null`), []byte(`"optional":{"x":"y"}`), 1)
			layer := ocispec.Descriptor{MediaType: mediatypes.CosignSimpleSigning, Digest: digest.FromBytes(altered), Size: int64(len(altered)),
				Annotations: map[string]string{mediatypes.AnnotationCosignSignature: base64.StdEncoding.EncodeToString(sig)}}
			referrers.PushBlob(ctx, target, layer, altered)
			sub := subject
			oras.PackManifest(ctx, target, oras.PackManifestVersion1_1, mediatypes.ArtifactTypeCosignSignature, oras.PackManifestOptions{Subject: &sub, Layers: []ocispec.Descriptor{layer}})
		}, "no trusted key verifies this signature"},
		{"bundle copied from another version", func(t *testing.T, target oras.Target, subject, other ocispec.Descriptor) {
			store := memory.New()
			d, _ := signature.Sign(ctx, store, ref, other, alice, signature.SignOptions{})
			raw, _ := content.FetchAll(ctx, store, d)
			var m ocispec.Manifest
			json.Unmarshal(raw, &m)
			blob, _ := content.FetchAll(ctx, store, m.Layers[0])
			referrers.Push(ctx, target, subject, mediatypes.SigstoreBundle, mediatypes.SigstoreBundle, blob, m.Annotations)
		}, "not for this version"},
		{"referrer payload of another version", func(t *testing.T, target oras.Target, subject, other ocispec.Descriptor) {
			signReferrer(t, target, subject, alice, simpleSigning(other.Digest), time.Now())
		}, "not for this version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := memory.New()
			subject, other := pushSubject(t, target, "v1"), pushSubject(t, target, "v2")
			c.write(t, target, subject, other)
			found, err := signature.Find(ctx, target, subject, trusted)
			if err != nil {
				t.Fatal(err)
			}
			if len(found) != 1 || found[0].Valid || !strings.Contains(found[0].Problem, c.problem) {
				t.Fatalf("found %+v, want one rejected with %q", found, c.problem)
			}
		})
	}
}

// junk lists extra referrers next to a store's own: descriptors whose
// content the store serves whatever their media type, as a registry
// listing garbage would.
type junk struct {
	*memory.Store
	extra []ocispec.Descriptor
	raw   map[digest.Digest][]byte
}

func (j *junk) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	own, err := registry.Referrers(ctx, j.Store, desc, artifactType)
	if err != nil {
		return err
	}
	return fn(append(own, j.extra...))
}

func (j *junk) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if b, ok := j.raw[d.Digest]; ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	return j.Store.Fetch(ctx, d)
}

func (j *junk) add(artifactType string, annotations map[string]string, manifest []byte, blobs ...[]byte) {
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest)), ArtifactType: artifactType, Annotations: annotations}
	j.extra = append(j.extra, d)
	j.raw[d.Digest] = manifest
	for _, b := range blobs {
		j.raw[digest.FromBytes(b)] = b
	}
}

func manifestWith(layers ...ocispec.Descriptor) []byte {
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.DescriptorEmptyJSON, Layers: layers})
	return m
}

// Junk referrers neither stop the search nor count: a manifest that is not
// JSON, bundles with no layer, a bundle that is not JSON, one holding no
// envelope, one with two signatures, a blob larger than a signature may
// be; attestations labelled as such and other artifacts are not read.
func TestFindJunkReferrers(t *testing.T) {
	alice := newKey(t)
	j := &junk{Store: memory.New(), raw: map[digest.Digest][]byte{}}
	subject := pushSubject(t, j.Store, "v1")
	if _, err := signature.Sign(ctx, j.Store, ref, subject, alice, signature.SignOptions{}); err != nil {
		t.Fatal(err)
	}
	bundleLayer := func(b []byte) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: mediatypes.SigstoreBundle, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
	label := map[string]string{mediatypes.AnnotationBundlePredicateType: mediatypes.PredicateCosignSign}
	j.add(mediatypes.ArtifactTypeCosignSignature, nil, []byte("not json"))
	j.add(mediatypes.SigstoreBundle, label, manifestWith())
	notJSON := []byte("{{{")
	j.add(mediatypes.SigstoreBundle, label, manifestWith(bundleLayer(notJSON)), notJSON)
	noEnv := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{}}`)
	j.add(mediatypes.SigstoreBundle, nil, manifestWith(bundleLayer(noEnv)), noEnv)
	two := []byte(`{"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AA=="},{"sig":"AA=="}]}}`)
	j.add(mediatypes.SigstoreBundle, label, manifestWith(bundleLayer(two)), two)
	huge := ocispec.Descriptor{MediaType: mediatypes.SigstoreBundle, Digest: digest.FromString("huge"), Size: 64 << 20}
	j.add(mediatypes.SigstoreBundle, label, manifestWith(huge))
	// Never read: labelled attestations and other artifacts (their
	// manifests are not even stored).
	j.extra = append(j.extra,
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("att"), Size: 10, ArtifactType: mediatypes.SigstoreBundle,
			Annotations: map[string]string{mediatypes.AnnotationBundlePredicateType: mediatypes.PredicateSLSAProvenanceV1}},
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sbom"), Size: 10, ArtifactType: "application/spdx+json"})

	found, err := signature.Find(ctx, j, subject, []key.Public{alice.Public})
	if err != nil {
		t.Fatal(err)
	}
	valid, problems := 0, map[string]bool{}
	for _, f := range found {
		if f.Valid {
			valid++
		} else {
			problems[f.Problem] = true
		}
	}
	if valid != 1 {
		t.Errorf("%d valid signatures, want 1: %+v", valid, found)
	}
	for _, want := range []string{
		"the referrer's manifest is not valid JSON",
		"the bundle is not valid JSON",
		"the bundle holds no DSSE envelope (certificate or message-signature bundles are not supported offline)",
		"the envelope has 2 signatures, expected exactly 1",
	} {
		if !problems[want] {
			t.Errorf("no signature rejected with %q: %v", want, problems)
		}
	}
	tooLarge := false
	for p := range problems {
		tooLarge = tooLarge || strings.Contains(p, "cannot read the bundle") && strings.Contains(p, "more than")
	}
	if !tooLarge {
		t.Errorf("the oversized bundle was not refused unread: %v", problems)
	}
	if len(found) != 6 {
		t.Errorf("%d signatures examined, want 6 (the valid one, 5 junk; the bundle without a layer skipped)", len(found))
	}
}

// The cap keeps the newest: 300 junk referrer signatures dated before a
// valid bundle leave it examined, and the rest are counted; the legacy
// layers are capped separately, last appended first.
func TestSearchCapNewestFirst(t *testing.T) {
	alice, mallory := newKey(t), newKey(t)
	target := memory.New()
	subject := pushSubject(t, target, "v1")
	t0 := time.Now().Add(-time.Hour)
	for i := range 300 {
		signReferrer(t, target, subject, mallory, fmt.Appendf(simpleSigning(subject.Digest), " %d", i), t0.Add(time.Duration(i)*time.Second))
	}
	if _, err := signature.Sign(ctx, target, ref, subject, alice, signature.SignOptions{Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		signature.Sign(ctx, target, ref, subject, mallory, signature.SignOptions{Form: signature.FormLegacy})
	}
	signature.Sign(ctx, target, ref, subject, alice, signature.SignOptions{Form: signature.FormLegacy})

	res, err := signature.Search(ctx, target, subject, []key.Public{alice.Public}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var valid []string
	for _, f := range res.Found {
		if f.Valid {
			valid = append(valid, string(f.Form))
		}
	}
	if strings.Join(valid, ",") != "legacy,bundle" {
		t.Errorf("valid signatures %v, want the newest legacy layer and the newest bundle", valid)
	}
	if len(res.Found) != 4 || res.NotExamined != 2+299 {
		t.Errorf("%d examined, %d not, want 4 and 301", len(res.Found), res.NotExamined)
	}
	if !strings.Contains(res.Note(), "301 more signatures") {
		t.Errorf("note: %q", res.Note())
	}
}

// An attestation is found by its predicate, verified, and never counts as
// a signature; cosign v2's .att form is read too.
func TestAttestations(t *testing.T) {
	alice, mallory := newKey(t), newKey(t)
	target := memory.New()
	subject := pushSubject(t, target, "v1")
	stmt := fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":%q,"predicate":{"inputs":[]}}`,
		subject.Digest.Encoded(), mediatypes.PredicateLineage)
	if _, err := signature.Attest(ctx, target, subject, alice, mediatypes.PredicateLineage, stmt, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := signature.Attest(ctx, target, subject, mallory, mediatypes.PredicateLineage, stmt, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// cosign v2: a DSSE envelope layer of the .att tag, labelled with its
	// predicate, signed by go-securesystemslib as cosign does.
	s, _ := dsse.NewEnvelopeSigner(ecdsaSigner{alice})
	env, _ := s.SignPayload(ctx, mediatypes.InTotoPayloadType, stmt)
	envJSON, _ := json.Marshal(env)
	layer := ocispec.Descriptor{MediaType: mediatypes.DSSEEnvelope, Digest: digest.FromBytes(envJSON), Size: int64(len(envJSON)),
		Annotations: map[string]string{"predicateType": mediatypes.PredicateLineage}}
	referrers.PushBlob(ctx, target, layer, envJSON)
	referrers.PushBlob(ctx, target, ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data)
	if _, err := oras.TagBytes(ctx, target, ocispec.MediaTypeImageManifest, manifestWith(layer), signature.LegacyAttestationTag(subject.Digest)); err != nil {
		t.Fatal(err)
	}

	atts, err := signature.Attestations(ctx, target, subject, []key.Public{alice.Public}, mediatypes.PredicateLineage)
	if err != nil {
		t.Fatal(err)
	}
	byForm := map[string]int{}
	for _, a := range atts {
		switch {
		case a.Valid && a.Key == alice.Fingerprint && a.PredicateType == mediatypes.PredicateLineage && bytes.Equal(a.Statement, stmt):
			byForm[string(a.Form)+" valid"]++
		case !a.Valid && a.Claimed == mallory.Fingerprint:
			byForm[string(a.Form)+" rejected"]++
		default:
			t.Errorf("unexpected %+v", a)
		}
	}
	if byForm["bundle valid"] != 1 || byForm["legacy valid"] != 1 || byForm["bundle rejected"] != 1 {
		t.Errorf("attestations: %v", byForm)
	}
	if atts, _ := signature.Attestations(ctx, target, subject, []key.Public{alice.Public}, mediatypes.PredicateSLSAProvenanceV1); len(atts) != 0 {
		t.Errorf("asked for provenance, got %+v", atts)
	}
	if found, err := signature.Find(ctx, target, subject, []key.Public{alice.Public}); err != nil || len(found) != 0 {
		t.Errorf("attestations counted as signatures: %+v, %v", found, err)
	}
}

type ecdsaSigner struct{ k key.Private }

func (s ecdsaSigner) Sign(_ context.Context, data []byte) ([]byte, error) { return s.k.Sign(data) }
func (s ecdsaSigner) KeyID() (string, error)                              { return "", nil }

// The bundle is what cosign writes and verifies: a DSSE envelope (no key
// ID, the key named by the bundle's hint) whose signature is ECDSA over
// SHA-256 of the DSSE pre-authentication encoding, which is, byte for
// byte, "DSSEv1 <len> <type> <len> <payload>". Envelopes from other
// signers with key IDs still verify: key IDs are not matched.
func TestBundleIsCosignsDSSE(t *testing.T) {
	alice := newKey(t)
	target := memory.New()
	subject := pushSubject(t, target, "v1")
	d, err := signature.Sign(ctx, target, ref, subject, alice, signature.SignOptions{Now: time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := content.FetchAll(ctx, target, d)
	var m ocispec.Manifest
	json.Unmarshal(raw, &m)
	if m.ArtifactType != mediatypes.SigstoreBundle || m.Annotations[mediatypes.AnnotationBundleContent] != "dsse-envelope" ||
		m.Annotations[mediatypes.AnnotationBundlePredicateType] != mediatypes.PredicateCosignSign || m.Annotations[mediatypes.AnnotationCreated] != "2026-03-03T14:00:00Z" {
		t.Errorf("manifest: %s", raw)
	}
	blob, _ := content.FetchAll(ctx, target, m.Layers[0])
	var b struct {
		MediaType            string `json:"mediaType"`
		VerificationMaterial struct {
			PublicKey struct{ Hint string } `json:"publicKey"`
		} `json:"verificationMaterial"`
		DSSEEnvelope dsse.Envelope `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(blob, &b); err != nil {
		t.Fatal(err)
	}
	if b.MediaType != mediatypes.SigstoreBundle || b.VerificationMaterial.PublicKey.Hint != alice.Hint() {
		t.Errorf("bundle: %s", blob)
	}
	env := b.DSSEEnvelope
	if len(env.Signatures) != 1 || env.Signatures[0].KeyID != "" || env.PayloadType != mediatypes.InTotoPayloadType {
		t.Fatalf("envelope: %+v", env)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	pae := fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(env.PayloadType), env.PayloadType, len(payload), payload)
	if !bytes.Equal(dsse.PAE(env.PayloadType, payload), pae) {
		t.Fatal("dsse.PAE is not the DSSE v1 encoding")
	}
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	sum := sha256.Sum256(pae)
	if !ecdsa.VerifyASN1(alice.Key.Public().(*ecdsa.PublicKey), sum[:], sig) {
		t.Error("the signature is not ECDSA over SHA-256 of the PAE")
	}
	if !strings.Contains(string(payload), `"predicateType":"https://sigstore.dev/cosign/sign/v1"`) ||
		!strings.Contains(string(payload), subject.Digest.Encoded()) {
		t.Errorf("statement: %s", payload)
	}

	// Another signer's envelope: URL-safe base64 and a key ID.
	env.Signatures[0].KeyID = "projects/p/keys/k"
	env.Payload = base64.URLEncoding.EncodeToString(payload)
	var generic map[string]any
	json.Unmarshal(blob, &generic)
	generic["dsseEnvelope"] = env
	other, _ := json.Marshal(generic)
	fresh := memory.New()
	subject = pushSubject(t, fresh, "v1")
	referrers.Push(ctx, fresh, subject, mediatypes.SigstoreBundle, mediatypes.SigstoreBundle, other, m.Annotations)
	found, err := signature.Find(ctx, fresh, subject, []key.Public{alice.Public})
	if err != nil || len(found) != 1 || !found[0].Valid {
		t.Errorf("envelope with a key ID: %+v, %v", found, err)
	}
}
