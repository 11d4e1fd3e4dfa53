package server

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"

	"github.com/modelreg/modelreg/internal/pgtest"
	"github.com/modelreg/modelreg/pkg/index"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// runIndex starts a server over dir with its index at dsn until the
// returned stop is called.
func runIndex(t *testing.T, dir, dsn string, reindex bool) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testLog, nil))
	LogDistributionTo(log)
	s, err := New(ctx, Options{Addr: "127.0.0.1:0", DataDir: dir, Index: dsn, Reindex: reindex, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	return s.Addr(), func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func dumpAt(t *testing.T, dsn string) []string {
	t.Helper()
	idx, err := index.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	rows, err := idx.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestReferrersAndReindex on a PostgreSQL index: what the server indexed
// while serving equals what a rebuild from storage gives.
func TestPostgresReindex(t *testing.T) {
	dir, dsn := t.TempDir(), pgtest.DB(t)
	addr, stop := runIndex(t, dir, dsn, false)
	v1 := fill(t, addr)
	got := referrers(t, addr, "team/a", v1, "")
	if len(got) != 3 {
		t.Fatalf("referrers of v1: %v", got)
	}
	stop()
	live := dumpAt(t, dsn)
	addr, stop = runIndex(t, dir, dsn, true)
	if again := referrers(t, addr, "team/a", v1, ""); !slices.Equal(again, got) {
		t.Errorf("after --reindex referrers are %v, want %v", again, got)
	}
	stop()
	if rebuilt := dumpAt(t, dsn); !slices.Equal(rebuilt, live) {
		t.Errorf("rebuilt index differs:\nlive:    %v\nrebuilt: %v", live, rebuilt)
	}
}

// Two replicas on one storage and one PostgreSQL index: what is pushed
// and promoted through one is listed through the other at once.
func TestPostgresReplicas(t *testing.T) {
	dir, dsn := t.TempDir(), pgtest.DB(t)
	a, stopA := runIndex(t, dir, dsn, false)
	defer stopA()
	b, stopB := runIndex(t, dir, dsn, false)
	defer stopB()
	v1 := fill(t, a)
	if got, want := referrers(t, b, "team/a", v1, ""), referrers(t, a, "team/a", v1, ""); !slices.Equal(got, want) || len(got) != 3 {
		t.Errorf("referrers through b: %v, through a: %v", got, want)
	}
	ctx := context.Background()
	for _, ref := range []string{"2.0.0", "production"} {
		da, err := repo(t, a, "team/a").Resolve(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		db, err := repo(t, b, "team/a").Resolve(ctx, ref)
		if err != nil || db.Digest != da.Digest {
			t.Errorf("%s through b: %v, %v; through a: %v", ref, db.Digest, err, da.Digest)
		}
	}
}
