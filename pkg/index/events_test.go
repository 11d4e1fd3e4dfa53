package index

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func version(t *testing.T, repo, seed string) Manifest {
	t.Helper()
	layer := model.LayerDescriptor(model.File{Path: "w.safetensors", Mode: 0o644, Size: 1, Kind: model.KindWeight}, digest.FromString(seed))
	_, raw, err := model.Pack(model.Metadata{}, []ocispec.Descriptor{layer})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Describe(repo, ocispec.MediaTypeImageManifest, raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func referrer(t *testing.T, repo string, subject Manifest, artifactType, seed string) Manifest {
	t.Helper()
	raw, _, err := promotion.ReferrerManifest(ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		artifactType, "application/octet-stream", []byte(seed), map[string]string{mediatypes.AnnotationCreated: "2026-01-01T00:00:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Describe(repo, ocispec.MediaTypeImageManifest, raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func eventTypes(t *testing.T, idx *Index) []string {
	t.Helper()
	evs, err := idx.Events(context.Background(), EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Type+" "+e.Subject)
	}
	return out
}

// Events are written with the change that causes them, once: a manifest
// pushed again, a tag written again, emit nothing more.
func TestEventsWithTheirChange(t *testing.T) {
	idx, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	ctx := WithActor(context.Background(), "alice")
	v := version(t, "team/a", "1")
	sig := referrer(t, "team/a", v, mediatypes.ArtifactTypeCosignSignature, "sig")
	ev := referrer(t, "team/a", v, mediatypes.ArtifactTypeEvaluation, "eval")
	for range 2 {
		for _, step := range []struct {
			m   Manifest
			tag string
		}{{v, "1.0.0"}, {sig, ""}, {ev, ""}, {v, "latest"}} {
			if err := idx.PutManifest(ctx, step.m, step.tag); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []string{wire.EventVersionPushed + " team/a:1.0.0", wire.EventSignatureAttached + " team/a@" + v.Digest.String(),
		wire.EventEvaluationAttached + " team/a@" + v.Digest.String()}
	if got := eventTypes(t, idx); !slices.Equal(got, want) {
		t.Fatalf("events:\n got  %v\n want %v", got, want)
	}
	evs, _ := idx.Events(ctx, EventFilter{})
	var d wire.EventData
	if err := json.Unmarshal(evs[0].Data, &d); err != nil || d.Actor != "alice" || d.Digest != v.Digest.String() || d.Tag != "1.0.0" {
		t.Errorf("version.pushed data: %+v %v", d, err)
	}
}

// A repair after a crash emits what storage holds beyond the index; a
// full rebuild emits nothing; a recovery committing a move the repair
// already announced emits it once.
func TestRepairEmitsTheDifference(t *testing.T) {
	idx, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	ctx := context.Background()
	v1, v2 := version(t, "team/a", "1"), version(t, "team/a", "2")
	if err := idx.PutManifest(ctx, v1, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	n := len(eventTypes(t, idx))
	// Storage also holds v2 (tagged), a signature of it, a promotion
	// record moving staging to it, and a tombstone of v1.
	sig := referrer(t, "team/a", v2, mediatypes.ArtifactTypeCosignSignature, "sig")
	rec := referrer(t, "team/a", v2, mediatypes.ArtifactTypePromotion, "rec")
	tomb := referrer(t, "team/a", v1, mediatypes.ArtifactTypeTombstone, "tomb")
	body, _ := json.Marshal(promotion.Record{Repository: "team/a", Stage: "staging", Digest: v2.Digest.String(), Kind: promotion.KindPromotion, Seq: 1, Actor: "bob"})
	c := Content{
		Manifests:  []Manifest{v1, v2, sig, rec, tomb},
		Tags:       map[string]digest.Digest{"2.0.0": v2.Digest, "staging": v2.Digest},
		Promotions: map[digest.Digest]Promotion{rec.Digest: {Stage: "staging", Digest: v2.Digest.String(), Time: time.Now(), Trusted: true, Seq: 1, Body: body}},
		Retired:    []Retirement{{Tag: "1.0.0", Digest: v1.Digest.String(), Tombstone: tomb.Digest.String(), Actor: "carol", Reason: "wrong split"}},
	}
	full := c
	if err := idx.ReplaceRepo(ctx, "team/a", full); err != nil {
		t.Fatal(err)
	}
	if got := eventTypes(t, idx); len(got) != n {
		t.Fatalf("a full rebuild emitted %v", got[n:])
	}
	// Back to the pre-crash index, then a repair.
	if err := idx.ReplaceRepo(ctx, "team/a", Content{Manifests: []Manifest{v1}, Tags: map[string]digest.Digest{"1.0.0": v1.Digest}}); err != nil {
		t.Fatal(err)
	}
	n = len(eventTypes(t, idx))
	c.Repair = true
	if err := idx.ReplaceRepo(ctx, "team/a", c); err != nil {
		t.Fatal(err)
	}
	got := eventTypes(t, idx)[n:]
	want := []string{wire.EventSignatureAttached + " team/a@" + v2.Digest.String(), wire.EventStageMoved + " team/a:staging",
		wire.EventVersionPushed + " team/a:2.0.0", wire.EventVersionDeleted + " team/a@" + v1.Digest.String()}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the repair emitted:\n got  %v\n want %v", got, want)
	}
	// The recovery of that move commits it again: nothing more.
	n = len(eventTypes(t, idx))
	id, err := idx.BeginMove(ctx, Move{Repo: "team/a", Stage: "staging", Target: v2.Digest, Record: rec.Digest})
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.CommitMove(ctx, id, &v2, "staging", rec, c.Promotions[rec.Digest]); err != nil {
		t.Fatal(err)
	}
	if got := eventTypes(t, idx); len(got) != n {
		t.Errorf("recovery re-announced a move: %v", got[n:])
	}
}

// Fanout: a new subscription starts at the newest event; each then gets
// the events it wants, once; deliveries move through their states.
func TestFanoutAndDeliveries(t *testing.T) {
	idx, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	ctx := context.Background()
	subs := []Subscriber{
		{Name: "all", Wants: func(string, string) bool { return true }},
		{Name: "b", Wants: func(_, repo string) bool { return repo == "team/b" }},
	}
	if err := idx.PutManifest(ctx, version(t, "team/a", "old"), "0.1.0"); err != nil {
		t.Fatal(err)
	}
	if n, err := idx.Fanout(ctx, subs); err != nil || n != 0 {
		t.Fatalf("first fanout: %d deliveries, %v (a new subscription must not get the past)", n, err)
	}
	for _, r := range []string{"team/a", "team/b"} {
		if err := idx.PutManifest(ctx, version(t, r, r), "1.0.0"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := idx.Fanout(ctx, subs); err != nil || n != 3 {
		t.Fatalf("fanout: %d deliveries, %v; want 3 (2 to all, 1 to b)", n, err)
	}
	if n, _ := idx.Fanout(ctx, subs); n != 0 {
		t.Fatalf("a second fanout made %d deliveries", n)
	}
	due, err := idx.Due(ctx, time.Now(), 10)
	if err != nil || len(due) != 3 {
		t.Fatalf("due: %d, %v", len(due), err)
	}
	if err := idx.Attempted(ctx, due[0].Delivery.ID, Attempt{Delivered: true, Status: 204}); err != nil {
		t.Fatal(err)
	}
	if err := idx.Attempted(ctx, due[1].Delivery.ID, Attempt{Status: 500, Err: "boom", Next: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := idx.Attempted(ctx, due[2].Delivery.ID, Attempt{Status: 0, Err: "refused", Dead: true}); err != nil {
		t.Fatal(err)
	}
	if due, _ := idx.Due(ctx, time.Now(), 10); len(due) != 0 {
		t.Errorf("%d deliveries still due", len(due))
	}
	for state, want := range map[string]int{DeliveryDelivered: 1, DeliveryPending: 1, DeliveryDead: 1} {
		if ds, _ := idx.Deliveries(ctx, "", state, 10); len(ds) != want {
			t.Errorf("%d %s deliveries, want %d", len(ds), state, want)
		}
	}
	if ok, err := idx.Redeliver(ctx, due[2].Delivery.ID); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if due, _ := idx.Due(ctx, time.Now(), 10); len(due) != 1 || due[0].Delivery.Attempts != 0 {
		t.Errorf("after a redelivery: %+v", due)
	}
	// Pruning forgets old events and their deliveries; a schema change of
	// the index (a rebuild) keeps the outbox.
	if n, err := idx.PruneEvents(ctx, time.Now().Add(time.Hour)); err != nil || n != 3 {
		t.Errorf("pruned %d, %v", n, err)
	}
	if ds, _ := idx.Deliveries(ctx, "", "", 10); len(ds) != 0 {
		t.Errorf("%d deliveries left after pruning", len(ds))
	}
}

// The outbox survives the index being dropped for a new schema (an index
// from before versioned migrations, of an older schema).
func TestOutboxSurvivesSchemaChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	idx, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := idx.Emit(ctx, wire.EventPromotionRefused, "team/a", "team/a:production", wire.EventData{Stage: "production"}); err != nil {
		t.Fatal(err)
	}
	if err := idx.EndRebuild(ctx); err != nil {
		t.Fatal(err)
	}
	// An index from before versioned migrations, of an older schema.
	if _, err := idx.db.Exec(`UPDATE meta SET value = 'old' WHERE key = 'schema'`); err != nil {
		t.Fatal(err)
	}
	if _, err := idx.db.Exec(`DROP TABLE ` + migrationsTable); err != nil {
		t.Fatal(err)
	}
	idx.Close()
	idx, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	if !idx.Stale() {
		t.Fatal("an index of another schema was not dropped")
	}
	if got := eventTypes(t, idx); len(got) != 1 {
		t.Errorf("the outbox after a schema change: %v", got)
	}
}

// An index of schema 4 from before versioned migrations is adopted as it
// is: its rows stay, and no rebuild is needed.
func TestLegacySchemaAdopted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	idx, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := version(t, "team/a", "1")
	if err := idx.PutManifest(ctx, m, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := idx.EndRebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := idx.db.Exec(`DROP TABLE ` + migrationsTable); err != nil {
		t.Fatal(err)
	}
	idx.Close()
	idx, err = Open("sqlite:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	if idx.Stale() {
		t.Error("an index of schema 4 needs a rebuild after its adoption")
	}
	if d, err := idx.Tag(ctx, "team/a", "1.0.0"); err != nil || d != m.Digest {
		t.Errorf("tag after the adoption: %s, %v", d, err)
	}
	if have, want, err := idx.Version(ctx); err != nil || have != want || have < 1 {
		t.Errorf("schema version %d of %d, %v", have, want, err)
	}
}
