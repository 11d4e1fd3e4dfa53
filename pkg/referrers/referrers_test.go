package referrers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/referrers/referrerstest"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
)

var ctx = context.Background()

// pushSubject stores a small image manifest to attach referrers to.
func pushSubject(t *testing.T, target oras.Target) ocispec.Descriptor {
	t.Helper()
	layer := []byte("weights")
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

// kinds pushes one referrer of each kind and returns their digests by kind.
func pushKinds(t *testing.T, target oras.Target, subject ocispec.Descriptor) map[referrers.Kind]digest.Digest {
	t.Helper()
	out := map[referrers.Kind]digest.Digest{}
	for _, r := range []struct {
		kind         referrers.Kind
		artifactType string
		predicate    string
	}{
		{referrers.KindLineage, mediatypes.ArtifactTypeLineage, ""},
		{referrers.KindEvaluation, mediatypes.ArtifactTypeEvaluation, ""},
		{referrers.KindPromotion, mediatypes.ArtifactTypePromotion, ""},
		{referrers.KindTombstone, mediatypes.ArtifactTypeTombstone, ""},
		{referrers.KindSignature, mediatypes.SigstoreBundle, mediatypes.PredicateCosignSign},
		{referrers.KindAttestation, mediatypes.SigstoreBundle, mediatypes.PredicateSLSAProvenanceV1},
		{referrers.KindBundle, mediatypes.SigstoreBundle, ""},
		{referrers.KindOther, "application/spdx+json", ""},
	} {
		ann := map[string]string{}
		if r.predicate != "" {
			ann[mediatypes.AnnotationBundlePredicateType] = r.predicate
		}
		d, err := referrers.Push(ctx, target, subject, r.artifactType, r.artifactType, []byte(`{"kind":"`+string(r.kind)+`"}`), ann)
		if err != nil {
			t.Fatal(err)
		}
		out[r.kind] = d.Digest
	}
	return out
}

// checkListing: every pushed referrer is listed once with its kind, and
// its blob reads back.
func checkListing(t *testing.T, l *referrers.Listing, want map[referrers.Kind]digest.Digest) {
	t.Helper()
	if len(l.Items) != len(want) {
		t.Fatalf("%d referrers listed, want %d", len(l.Items), len(want))
	}
	for kind, d := range want {
		items := l.Of(kind)
		if len(items) != 1 || items[0].Descriptor.Digest != d {
			t.Errorf("kind %s: %v, want %s", kind, items, d)
			continue
		}
		blob, err := items[0].Blob(ctx)
		if err != nil || string(blob) != `{"kind":"`+string(kind)+`"}` {
			t.Errorf("kind %s: blob %q, %v", kind, blob, err)
		}
	}
}

// The manifest Push writes is, byte for byte, the one the server builds
// for its own records (promotion.ReferrerManifest) when the annotations
// carry a creation time: the server compares its records byte for byte.
func TestPushMatchesServerRecord(t *testing.T) {
	store := memory.New()
	subject := pushSubject(t, store)
	blob := []byte(`{"stage":"production"}`)
	ann := map[string]string{mediatypes.AnnotationCreated: "2026-03-03T14:00:00.123456789Z", mediatypes.AnnotationPromotionStage: "production"}
	got, err := referrers.Push(ctx, store, subject, mediatypes.ArtifactTypePromotion, mediatypes.DSSEEnvelope, blob, ann)
	if err != nil {
		t.Fatal(err)
	}
	want, layer, err := promotion.ReferrerManifest(subject, mediatypes.ArtifactTypePromotion, mediatypes.DSSEEnvelope, blob, ann)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := content.FetchAll(ctx, store, got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, want) {
		t.Fatalf("manifest differs from the server's record:\n got %s\nwant %s", raw, want)
	}
	if got.ArtifactType != mediatypes.ArtifactTypePromotion || got.Annotations[mediatypes.AnnotationPromotionStage] != "production" {
		t.Errorf("descriptor: %+v", got)
	}
	if ok, _ := store.Exists(ctx, layer); !ok {
		t.Error("layer not stored")
	}
	if ok, _ := store.Exists(ctx, ocispec.DescriptorEmptyJSON); !ok {
		t.Error("empty config not stored")
	}
}

// Without a creation time, PackManifest stamps one: what List orders by.
func TestPushStampsCreated(t *testing.T) {
	store := memory.New()
	subject := pushSubject(t, store)
	before := time.Now().Add(-time.Second)
	d, err := referrers.Push(ctx, store, subject, mediatypes.ArtifactTypeLineage, mediatypes.InTotoPayloadType, []byte(`{}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := referrers.List(ctx, store, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Descriptor.Digest != d.Digest {
		t.Fatalf("listing: %+v", l.Items)
	}
	if c := l.Items[0].Created(time.Now()); c.Before(before.Truncate(time.Second)) {
		t.Errorf("created %v, pushed after %v", c, before)
	}
	m, err := l.Items[0].Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != ocispec.MediaTypeEmptyJSON || m.Config.Data != nil || len(m.Layers) != 1 || m.Subject == nil || m.Subject.Digest != subject.Digest {
		t.Errorf("manifest: %+v", m)
	}
}

// An OCI layout directory is a target like any other: push into it, list
// it, and list it again opened read-only from disk.
func TestOCILayout(t *testing.T) {
	dir := t.TempDir()
	store, err := oci.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	subject := pushSubject(t, store)
	want := pushKinds(t, store, subject)
	l, err := referrers.List(ctx, store, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, l, want)

	ro, err := oci.NewFromFS(ctx, os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	l, err = referrers.List(ctx, ro, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, l, want)

	l, err = referrers.List(ctx, ro, subject, referrers.ListOptions{ArtifactType: mediatypes.ArtifactTypeEvaluation})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Kind != referrers.KindEvaluation {
		t.Errorf("filtered listing: %+v", l.Items)
	}
}

// Over HTTP, a registry with the Referrers API is asked through it and its
// tag schema never read; one without it (distribution as it ships) is
// read through the tag schema that Push kept up to date. Both list the
// same referrers.
func TestRegistryReferrersAPIAndTagSchema(t *testing.T) {
	for _, api := range []bool{true, false} {
		name := map[bool]string{true: "referrers API", false: "tag schema"}[api]
		t.Run(name, func(t *testing.T) {
			reg := referrerstest.Start(t, api)
			subject := pushSubject(t, reg.Repository(t, "team/m"))
			want := pushKinds(t, reg.Repository(t, "team/m"), subject)
			reg.ReferrersCalls.Store(0)
			reg.TagSchemaReads.Store(0)

			// A fresh client, which does not know yet what the registry can do.
			l, err := referrers.List(ctx, reg.Repository(t, "team/m"), subject, referrers.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkListing(t, l, want)
			if api && (reg.ReferrersCalls.Load() != 1 || reg.TagSchemaReads.Load() != 0) {
				t.Errorf("with the API: %d referrers calls, %d tag-schema reads; want 1 and 0", reg.ReferrersCalls.Load(), reg.TagSchemaReads.Load())
			}
			if !api && reg.TagSchemaReads.Load() == 0 {
				t.Error("without the API the tag schema was not read")
			}
		})
	}
}

// plain hides everything a target can do beyond oras.Target (no graph, no
// Referrers API), so List falls back to the tag schema itself.
type plain struct{ oras.Target }

// A target that is neither a ReferrerLister nor a graph store is read
// through the referrers tag schema: the index tagged sha256-<hex>.
func TestPlainTargetTagSchema(t *testing.T) {
	store := memory.New()
	subject := pushSubject(t, store)
	want := pushKinds(t, store, subject)

	l, err := referrers.List(ctx, plain{store}, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 0 {
		t.Fatalf("no tag-schema index yet, but %d referrers listed", len(l.Items))
	}

	graph, err := referrers.List(ctx, store, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var descs []ocispec.Descriptor
	for _, it := range graph.Items {
		descs = append(descs, it.Descriptor)
	}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs})
	if _, err := oras.TagBytes(ctx, store, ocispec.MediaTypeImageIndex, idx, referrers.TagSchemaTag(subject.Digest)); err != nil {
		t.Fatal(err)
	}
	l, err = referrers.List(ctx, plain{store}, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, l, want)
}

// counting counts the reads of a target and can serve altered bytes for
// one digest (a registry returning other content than it listed).
type counting struct {
	oras.Target
	fetches atomic.Int64
	alter   digest.Digest
}

func (c *counting) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	c.fetches.Add(1)
	if d.Digest == c.alter {
		return io.NopCloser(bytes.NewReader(bytes.Repeat([]byte("x"), int(d.Size)))), nil
	}
	return c.Target.Fetch(ctx, d)
}

// Reads are lazy, done once, bounded and verified: a record read twice is
// fetched once, an oversized record
// layer is refused unread, and content that does not match its digest is
// an error.
func TestItemReadsLazyBoundedVerified(t *testing.T) {
	store := memory.New()
	subject := pushSubject(t, store)
	ok, err := referrers.Push(ctx, store, subject, mediatypes.ArtifactTypeEvaluation, mediatypes.ArtifactTypeEvaluation, []byte(`{"metrics":{}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A record claiming a 2 MiB layer (the blob itself is never stored).
	big := ocispec.Descriptor{MediaType: mediatypes.InTotoPayloadType, Digest: digest.FromString("big"), Size: 2 << 20}
	empty := ocispec.DescriptorEmptyJSON
	if _, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, mediatypes.ArtifactTypeLineage, oras.PackManifestOptions{
		Subject: &subject, Layers: []ocispec.Descriptor{big}, ConfigDescriptor: &ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size}}); err != nil {
		t.Fatal(err)
	}
	altered, err := referrers.Push(ctx, store, subject, mediatypes.ArtifactTypePromotion, mediatypes.ArtifactTypePromotion, []byte(`{"stage":"production"}`), nil)
	if err != nil {
		t.Fatal(err)
	}

	// Through the Referrers API a listing reads nothing; a graph store
	// reads each referrer's manifest to learn its artifactType
	// (registry.Referrers), so the count starts after the listing.
	c := &counting{Target: store}
	l, err := referrers.List(ctx, struct {
		*counting
		graph
	}{c, store}, subject, referrers.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.fetches.Store(0)

	ev := l.Of(referrers.KindEvaluation)[0]
	if ev.Descriptor.Digest != ok.Digest {
		t.Fatal("wrong evaluation listed")
	}
	for range 2 {
		if b, err := ev.Blob(ctx); err != nil || string(b) != `{"metrics":{}}` {
			t.Fatalf("blob %q, %v", b, err)
		}
	}
	if n := c.fetches.Load(); n != 2 {
		t.Errorf("%d reads for one record read twice, want 2 (manifest, layer)", n)
	}

	c.fetches.Store(0)
	if _, err := l.Of(referrers.KindLineage)[0].Blob(ctx); !errors.Is(err, referrers.ErrMalformed) {
		t.Errorf("oversized layer: %v, want ErrMalformed", err)
	}
	if n := c.fetches.Load(); n != 1 {
		t.Errorf("%d reads for an oversized record, want 1 (its manifest)", n)
	}

	pr := l.Of(referrers.KindPromotion)[0]
	m, err := pr.Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.alter = m.Layers[0].Digest
	if _, err := pr.Blob(ctx); err == nil || !errors.Is(err, content.ErrMismatchedDigest) {
		t.Errorf("altered layer of %s: %v, want a digest mismatch", altered.Digest, err)
	}
	if _, err := pr.Fetch(ctx, ocispec.Descriptor{MediaType: "x/y", Digest: digest.FromString("huge"), Size: referrers.MaxBlobSize + 1}); !errors.Is(err, errdef.ErrSizeExceedsLimit) {
		t.Errorf("oversized blob: %v", err)
	}
}

// graph is the part of a graph store the counting wrapper must keep, so
// List takes the graph path through it.
type graph interface {
	Predecessors(ctx context.Context, node ocispec.Descriptor) ([]ocispec.Descriptor, error)
}

// Newest first by creation time; no time, an unreadable one or one far in
// the future last; ties by digest.
func TestSortNewestFirst(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	item := func(name, created string) *referrers.Item {
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name), ArtifactType: mediatypes.SigstoreBundle}
		if created != "" {
			d.Annotations = map[string]string{mediatypes.AnnotationCreated: created}
		}
		return &referrers.Item{Kind: referrers.Classify(d), Descriptor: d}
	}
	items := []*referrers.Item{
		item("may", "2026-05-01T00:00:00Z"),
		item("future", "2999-01-01T00:00:00Z"),
		item("junk", "yesterday"),
		item("none", ""),
		item("late-may", "2026-05-31T00:00:00Z"),
		item("mid-may", "2026-05-15T00:00:00.5Z"),
		item("tomorrow", "2026-06-01T12:00:00Z"), // within a day ahead: believed
	}
	referrers.SortNewestFirst(items, now)
	var got []string
	for _, it := range items[:4] {
		got = append(got, it.Descriptor.Annotations[mediatypes.AnnotationCreated])
	}
	want := []string{"2026-06-01T12:00:00Z", "2026-05-31T00:00:00Z", "2026-05-15T00:00:00.5Z", "2026-05-01T00:00:00Z"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order %v, want %v first", got, want)
	}
	// The three without a believable time last, by digest.
	last := items[4:]
	for i := 1; i < len(last); i++ {
		if last[i-1].Descriptor.Digest > last[i].Descriptor.Digest {
			t.Errorf("untimed referrers not ordered by digest: %v", last)
		}
	}
}
