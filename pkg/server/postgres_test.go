package server

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

// Replicas that enforce different trust policies (a policy file updated
// on one and not yet on the other) refuse moves into protected stages on
// both, naming the digests and replicas, until they read the same file.
func TestReplicasGateAlike(t *testing.T) {
	dir, dsn := t.TempDir(), pgtest.DB(t)
	policy := "version: 1\nstages:\n  release:\n    lineage: {required: true}\n"
	pa, pb := filepath.Join(t.TempDir(), "a.yaml"), filepath.Join(t.TempDir(), "b.yaml")
	os.WriteFile(pa, []byte(policy), 0o644)
	os.WriteFile(pb, []byte(policy+"# edited on b only\n"), 0o644)
	start := func(p string) (string, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		log := slog.New(slog.NewTextHandler(testLog, nil))
		s, err := New(ctx, Options{Addr: "127.0.0.1:0", DataDir: dir, Index: dsn, PolicyFile: p, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		// Serving means published (Serve publishes before it answers):
		// a move tried before that would not see this replica at all.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if resp, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the replica does not answer /healthz")
			}
		}
		return s.Addr(), func() { cancel(); <-done }
	}
	a, stopA := start(pa)
	defer stopA()
	fill(t, a) // v2 has lineage
	b, stopB := start(pb)
	ctx := context.Background()
	v2, err := repo(t, a, "team/a").Resolve(ctx, "2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	// Both have published (at start): a move through either is refused.
	for _, addr := range []string{a, b} {
		err := repo(t, addr, "team/a").Tag(ctx, v2, "release")
		if err == nil || !strings.Contains(err.Error(), "enforce different trust policies") {
			t.Errorf("a move through %s while the replicas disagree: %v", addr, err)
		}
	}
	// b stops (cleanly: its heartbeat goes) and comes back with a's file.
	stopB()
	b, stopB = start(pa)
	defer stopB()
	if err := repo(t, b, "team/a").Tag(ctx, v2, "release"); err != nil {
		t.Errorf("a move once the replicas agree: %v", err)
	}
}
