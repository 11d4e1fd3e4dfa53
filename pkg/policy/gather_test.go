package policy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry"
)

// memRepo is an in-memory registry.Repository with the Referrers API,
// counting what a reader asks of it. Methods Gather does not use are left
// to the nil embedded interface.
type memRepo struct {
	registry.Repository
	store     *memory.Store
	byDigest  map[digest.Digest]ocispec.Descriptor
	referrers map[digest.Digest][]ocispec.Descriptor // subject -> referrers, as listed

	listings, manifestFetches, blobFetches atomic.Int64
}

func newMemRepo() *memRepo {
	return &memRepo{store: memory.New(), byDigest: map[digest.Digest]ocispec.Descriptor{}, referrers: map[digest.Digest][]ocispec.Descriptor{}}
}

func (r *memRepo) Referrers(_ context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	r.listings.Add(1)
	var out []ocispec.Descriptor
	for _, d := range r.referrers[desc.Digest] {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return fn(out)
}

func (r *memRepo) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	r.manifestFetches.Add(1)
	desc, ok := r.byDigest[digest.Digest(ref)]
	if !ok {
		var err error
		if desc, err = r.store.Resolve(ctx, ref); err != nil {
			return desc, nil, err
		}
	}
	rc, err := r.store.Fetch(ctx, desc)
	return desc, rc, err
}

func (r *memRepo) Blobs() registry.BlobStore         { return memBlobs{r: r} }
func (r *memRepo) Manifests() registry.ManifestStore { return memManifests{r: r} }

type memBlobs struct {
	registry.BlobStore
	r *memRepo
}

func (b memBlobs) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	b.r.blobFetches.Add(1)
	return b.r.store.Fetch(ctx, d)
}
func (b memBlobs) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	return b.r.store.Exists(ctx, d)
}
func (b memBlobs) Push(ctx context.Context, d ocispec.Descriptor, rd io.Reader) error {
	return b.r.store.Push(ctx, d, rd)
}

type memManifests struct {
	registry.ManifestStore
	r *memRepo
}

func (m memManifests) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	m.r.manifestFetches.Add(1)
	return m.r.store.Fetch(ctx, d)
}

// Push stores a manifest and, when it has a subject, lists it as a
// referrer with its artifactType and annotations, as the Referrers API does.
func (m memManifests) Push(ctx context.Context, d ocispec.Descriptor, rd io.Reader) error {
	raw, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if err := m.r.store.Push(ctx, d, bytes.NewReader(raw)); err != nil {
		return err
	}
	m.r.byDigest[d.Digest] = d
	var man ocispec.Manifest
	if json.Unmarshal(raw, &man) == nil && man.Subject != nil {
		m.r.referrers[man.Subject.Digest] = append(m.r.referrers[man.Subject.Digest],
			ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, ArtifactType: man.ArtifactType, Annotations: man.Annotations})
	}
	return nil
}

func (r *memRepo) resetCounts() {
	r.listings.Store(0)
	r.manifestFetches.Store(0)
	r.blobFetches.Store(0)
}

// gatherFixture: a subject, alice (trusted by the policy) and mallory (not).
type gatherFixture struct {
	repo           *memRepo
	subject        ocispec.Descriptor
	alice, mallory key.Private
	pol            *Policy
	t0             time.Time
}

func newGatherFixture(t *testing.T) *gatherFixture {
	t.Helper()
	f := &gatherFixture{repo: newMemRepo(), t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.subject = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("the model"), Size: 9}
	var pubPEM []byte
	for _, k := range []*key.Private{&f.alice, &f.mallory} {
		priv, pub, err := key.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if *k, err = key.ParsePrivate(priv, nil); err != nil {
			t.Fatal(err)
		}
		if pubPEM == nil {
			pubPEM = pub
		}
	}
	doc := "version: 1\nkeys:\n  alice: |\n    " + strings.ReplaceAll(strings.TrimSpace(string(pubPEM)), "\n", "\n    ") +
		"\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n"
	var err error
	if f.pol, err = Parse([]byte(doc), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *gatherFixture) signBundle(t *testing.T, k key.Private, at time.Time) {
	t.Helper()
	if _, err := signature.Sign(context.Background(), f.repo, registry.Reference{Registry: "r.example", Repository: "team/m"}, f.subject, k,
		signature.SignOptions{Form: signature.FormBundle, Now: at}); err != nil {
		t.Fatal(err)
	}
}

// signReferrer stores a cosign v2 OCI 1.1 referrer signature (simple
// signing payload; it names no key, so each must be verified).
func (f *gatherFixture) signReferrer(t *testing.T, k key.Private, at time.Time, n int) {
	t.Helper()
	payload := fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":"r.example/team/m"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":{"n":"%d"}}`, f.subject.Digest, n)
	sig, err := k.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	layer := ocispec.Descriptor{MediaType: mediatypes.CosignSimpleSigning, Digest: digest.FromBytes(payload), Size: int64(len(payload)),
		Annotations: map[string]string{mediatypes.AnnotationCosignSignature: base64.StdEncoding.EncodeToString(sig)}}
	ctx := context.Background()
	f.repo.Blobs().Push(ctx, layer, bytes.NewReader(payload))
	empty := ocispec.DescriptorEmptyJSON
	f.repo.Blobs().Push(ctx, empty, bytes.NewReader(empty.Data))
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: mediatypes.ArtifactTypeCosignSignature, Config: ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size},
		Layers: []ocispec.Descriptor{layer}, Subject: &f.subject, Annotations: map[string]string{mediatypes.AnnotationCreated: at.Format(time.RFC3339)}})
	if err := f.repo.Manifests().Push(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}, bytes.NewReader(m)); err != nil {
		t.Fatal(err)
	}
}

// 1,000 junk signatures by a key outside the policy plus one valid one:
// the valid one is found, the referrers are listed once for the whole
// Gather, and the reads are bounded by the cap, not by the junk.
func TestGatherBoundedWithJunkSignatures(t *testing.T) {
	f := newGatherFixture(t)
	for i := range 1000 {
		f.signBundle(t, f.mallory, f.t0.Add(time.Duration(i)*time.Second))
	}
	f.signBundle(t, f.alice, f.t0.Add(time.Hour))
	f.repo.resetCounts()

	ev, err := f.pol.Gather(context.Background(), f.repo, f.subject)
	if err != nil {
		t.Fatal(err)
	}
	d := f.pol.Evaluate("production", ev)
	if !d.Allowed || len(d.Approvers) != 1 || d.Approvers[0].Name != "alice" {
		t.Fatalf("decision: %+v", d)
	}
	capN := int64(signature.MaxSignatureReferrers)
	if n := f.repo.listings.Load(); n != 1 {
		t.Errorf("the subject's referrers were listed %d times, want 1", n)
	}
	// Per examined referrer: its manifest and its bundle; plus the lookups
	// of the legacy .sig and .att tags. (Before the cap: 2,004 manifest
	// reads, 1,001 blob reads and 4 listings.)
	if n := f.repo.manifestFetches.Load(); n > capN+2 {
		t.Errorf("%d manifest reads for 1,001 signature referrers, want at most %d", n, capN+2)
	}
	if n := f.repo.blobFetches.Load(); n > capN {
		t.Errorf("%d blob reads for 1,001 signature referrers, want at most %d", n, capN)
	}
	if len(ev.Signatures) != signature.MaxSignatureReferrers {
		t.Errorf("%d signatures examined, want %d", len(ev.Signatures), signature.MaxSignatureReferrers)
	}
	if !strings.Contains(ev.SignatureNote, fmt.Sprintf("%d more signatures", 1001-signature.MaxSignatureReferrers)) {
		t.Errorf("note: %q", ev.SignatureNote)
	}
	for _, s := range ev.Signatures {
		if !s.Valid && !strings.Contains(s.Problem, "which is not trusted here") {
			t.Errorf("junk bundle rejected for another reason: %s", s.Problem)
		}
	}
}

// Junk dated in the far future does not push the real signature out.
func TestGatherFutureDatedJunkGoesLast(t *testing.T) {
	f := newGatherFixture(t)
	for i := range 300 {
		f.signReferrer(t, f.mallory, time.Date(2999, 1, 1, 0, 0, i, 0, time.UTC), i)
	}
	f.signBundle(t, f.alice, time.Now().Add(-time.Minute))
	ev, err := f.pol.Gather(context.Background(), f.repo, f.subject)
	if err != nil {
		t.Fatal(err)
	}
	if d := f.pol.Evaluate("production", ev); !d.Allowed {
		t.Fatalf("future-dated junk hid the valid signature: %v", d.Err())
	}
}

// When the cap is hit before a valid signature, the refusal says how many
// signatures were not examined.
func TestGatherCapIsReported(t *testing.T) {
	f := newGatherFixture(t)
	f.signBundle(t, f.alice, f.t0)
	for i := range 300 {
		f.signReferrer(t, f.mallory, f.t0.Add(time.Duration(i+1)*time.Second), i)
	}
	f.repo.resetCounts()
	ev, err := f.pol.Gather(context.Background(), f.repo, f.subject)
	if err != nil {
		t.Fatal(err)
	}
	d := f.pol.Evaluate("production", ev)
	if d.Allowed {
		t.Fatal("a signature beyond the cap was counted")
	}
	if err := d.Err(); !strings.Contains(err.Error(), "45 more signatures of this version were not examined") {
		t.Errorf("refusal does not mention the cap: %v", err)
	}
	if n := f.repo.blobFetches.Load(); n > int64(signature.MaxSignatureReferrers) {
		t.Errorf("%d blob reads, cap %d", n, signature.MaxSignatureReferrers)
	}
}

// A bundle naming a key outside the policy is refused on its name alone:
// no trusted key is tried, even one that would verify it.
func TestGatherBundleHintDecides(t *testing.T) {
	f := newGatherFixture(t)
	disguised := key.Private{Key: f.alice.Key, Public: f.mallory.Public} // alice's signature, mallory's hint
	f.signBundle(t, disguised, f.t0)
	ev, err := f.pol.Gather(context.Background(), f.repo, f.subject)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Signatures) != 1 || ev.Signatures[0].Valid || ev.Signatures[0].Claimed != f.mallory.Fingerprint ||
		!strings.Contains(ev.Signatures[0].Problem, "not trusted here") {
		t.Errorf("signatures: %+v", ev.Signatures)
	}
}
