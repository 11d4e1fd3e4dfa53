package index

import (
	"context"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/pgtest"

	"github.com/modelreg/modelreg/pkg/query"
	"github.com/opencontainers/go-digest"
)

// Every write through the index API advances Generation, and reads do
// not: the server's answer cache relies on both.
func TestGenerationFollowsEveryWrite(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(testing.TB) string) {
		generationFollowsEveryWrite(t, openFixtureAt(t, dsn(t)))
	})
}

func generationFollowsEveryWrite(t *testing.T, idx *Index) {
	ctx := context.Background()
	rows, err := idx.Search(ctx, SearchOptions{Query: query.Cmp{Field: "version", Op: "=", Vals: []query.Value{{Str: "2.1.0"}}}})
	if err != nil || len(rows) != 1 {
		t.Fatal(rows, err)
	}
	d := digest.Digest(rows[0].Digest)
	m, ok, err := idx.Get(ctx, "team/risk", d)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	steps := []struct {
		name  string
		write func() error
	}{
		{"PutManifest", func() error { return idx.PutManifest(ctx, m, "production") }},
		{"DeleteTag", func() error { return idx.DeleteTag(ctx, "team/risk", "production") }},
		{"Retire", func() error { return idx.Retire(ctx, "team/risk", []Retirement{{Tag: "9.9.9", Digest: d.String()}}) }},
		{"BeginMove", func() error {
			_, err := idx.BeginMove(ctx, Move{Repo: "team/risk", Stage: "production", Target: d})
			return err
		}},
		{"Fail", func() error { return idx.Fail(ctx, "team/risk", d, context.Canceled) }},
		{"Begin", func() error { done, err := idx.Begin(ctx, "team/risk"); done(); return err }},
		{"DeleteManifest", func() error { return idx.DeleteManifest(ctx, "team/risk", d) }},
		{"ReplaceRepo", func() error { return idx.ReplaceRepo(ctx, "team/risk", Content{}) }},
		{"BeginRebuild", func() error { return idx.BeginRebuild(ctx) }},
		{"EndRebuild", func() error { return idx.EndRebuild(ctx) }},
	}
	for _, s := range steps {
		before := idx.Generation()
		if err := s.write(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if idx.Generation() == before {
			t.Errorf("%s did not advance the generation", s.name)
		}
		g := idx.Generation()
		if _, err := idx.Search(ctx, SearchOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := idx.Models(ctx, "", 10); err != nil {
			t.Fatal(err)
		}
		if idx.Generation() != g {
			t.Errorf("a read after %s advanced the generation", s.name)
		}
	}
}

// On PostgreSQL, a write through one replica advances the others'
// Generation too (they cache answers by it).
func TestGenerationFollowsOtherReplicas(t *testing.T) {
	dsn := pgtest.DB(t)
	a, b := openAt(t, dsn), openAt(t, dsn)
	ctx := context.Background()
	before := b.Generation()
	if err := a.PutManifest(ctx, version(t, "team/a", "1"), "1.0.0"); err != nil {
		t.Fatal(err)
	}
	// The notification arrives after the commit: wait for it (the test's
	// deadline bounds the wait).
	for b.Generation() == before {
		time.Sleep(time.Millisecond)
	}
	if d, err := b.Tag(ctx, "team/a", "1.0.0"); err != nil || d == "" {
		t.Errorf("replica b does not see a's write: %q, %v", d, err)
	}
}

// One replica leads a job at a time; when its session ends, another
// takes over.
func TestOneLeader(t *testing.T) {
	dsn := pgtest.DB(t)
	a, b := openAt(t, dsn), openAt(t, dsn)
	ctx := context.Background()
	releaseA, ok, err := a.TryLead(ctx, "events")
	if err != nil || !ok {
		t.Fatalf("a does not lead: %v", err)
	}
	if _, ok, err := b.TryLead(ctx, "events"); err != nil || ok {
		t.Fatalf("b leads while a does: %v", err)
	}
	if _, ok, _ := b.TryLead(ctx, "another-job"); !ok {
		t.Error("b cannot lead another job")
	}
	releaseA()
	releaseB, ok, err := b.TryLead(ctx, "events")
	if err != nil || !ok {
		t.Fatalf("b does not take over once a released: %v", err)
	}
	releaseB()
}
