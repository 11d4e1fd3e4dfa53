package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// runServer starts a server over dir with a configuration, until stop.
func runServer(t *testing.T, dir string, reindex bool, cfg *config.Config) (*Server, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testLog, nil))
	LogDistributionTo(log)
	s, err := New(ctx, Options{Addr: "127.0.0.1:0", DataDir: dir, Reindex: reindex, Logger: log, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func retentionConfig(grace time.Duration, rules ...config.Rule) *config.Config {
	return &config.Config{Retention: config.Retention{Grace: config.Duration(grace), Rules: rules}}
}

// blobStored reports whether storage holds a blob's bytes.
func blobStored(dir string, d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(blobDataPath(d))))
	return err == nil
}

// Retention and a collection leave an index that a rebuild from storage
// gives again row for row; the versions retention let go lose their
// weights, keep their manifests, and get a tombstone naming the rule.
func TestCollectThenReindex(t *testing.T) {
	dir := t.TempDir()
	s, stop := runServer(t, dir, false, retentionConfig(time.Millisecond, config.Rule{Repositories: "team/c", KeepNewest: 1}))
	addr := s.Addr()
	fill(t, addr)
	c := repo(t, addr, "team/c")
	var vs []ocispec.Descriptor
	for i := range 3 {
		vs = append(vs, push(t, c, fmt.Sprintf("%d.0.0", i+1), "application/vnd.cncf.model.manifest.v1+json", fmt.Sprintf("c-weights-%d", i), nil))
	}
	time.Sleep(10 * time.Millisecond) // past the grace period: the pushes' blobs count as old
	dry, err := s.Collect(context.Background(), wire.GCRequest{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Versions) != 2 || dry.Blobs < 2 {
		t.Fatalf("dry run: %+v", dry)
	}
	for i := range 3 {
		if !blobStored(dir, digest.FromString(fmt.Sprintf("c-weights-%d", i))) {
			t.Fatalf("the dry run deleted the weights of %d.0.0", i+1)
		}
	}
	rep, err := s.Collect(context.Background(), wire.GCRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Versions) != 2 || rep.Blobs != dry.Blobs || rep.Bytes != dry.Bytes {
		t.Fatalf("the run did not do what the dry run said: dry %+v, run %+v", dry, rep)
	}
	gone := 0
	for i, v := range vs {
		weights := blobStored(dir, digest.FromString(fmt.Sprintf("c-weights-%d", i)))
		if !blobStored(dir, v.Digest) {
			t.Errorf("the manifest of %d.0.0 was collected; a tombstone refers to it", i+1)
		}
		if !weights {
			gone++
			if tomb := referrers(t, addr, "team/c", v.Digest, ""); len(tomb) != 1 || !strings.HasPrefix(tomb[0], "application/vnd.modelreg.tombstone.v1+json ") {
				t.Errorf("%d.0.0 lost its weights but has tombstones %v", i+1, tomb)
			}
		}
	}
	if gone != 2 {
		t.Errorf("%d versions lost their weights, want 2", gone)
	}
	again, err := s.Collect(context.Background(), wire.GCRequest{})
	if err != nil || len(again.Versions) != 0 || again.Blobs != 0 {
		t.Errorf("a second run: %+v, %v; want nothing left to do", again, err)
	}
	stop()
	live := dump(t, dir)
	_, stop = runServer(t, dir, true, nil)
	stop()
	if rebuilt := dump(t, dir); !slices.Equal(rebuilt, live) {
		t.Errorf("after the collection, a rebuilt index differs:\nlive:    %v\nrebuilt: %v", live, rebuilt)
	}
}

// Pushes racing a collection whose garbage is exactly what they push:
// each push checks its blobs exist (they do: garbage, old), skips their
// upload, and writes its manifest while the collector sweeps. The touch
// of the existence check and the write barrier keep every such push
// whole: every version pushed pulls with the right bytes.
func TestCollectWhilePushing(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	weights := func(i int) string { return fmt.Sprintf("weights shared by the garbage and the push %d", i) }
	// First life: versions pushed and deleted, leaving their blobs as garbage.
	s, stop := runServer(t, dir, false, nil)
	r := repo(t, s.Addr(), "team/race")
	for i := range n {
		d := push(t, r, "", "application/vnd.example.old", weights(i), nil)
		if err := r.Delete(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	// The garbage is old: written two hours ago, named by no request of
	// the new process.
	old := time.Now().Add(-2 * time.Hour)
	filepath.Walk(filepath.Join(dir, "docker", "registry", "v2", "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})

	s, stop = runServer(t, dir, false, retentionConfig(time.Hour))
	defer stop()
	r = repo(t, s.Addr(), "team/race")
	ctx := context.Background()
	var wg sync.WaitGroup
	pushed := make([]ocispec.Descriptor, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pushed[i] = push(t, r, fmt.Sprintf("%d.0.0", i), "application/vnd.example.new", weights(i), nil)
		}()
	}
	collected := 0
	for range 4 {
		rep, err := s.Collect(ctx, wire.GCRequest{})
		if err != nil {
			t.Fatal(err)
		}
		collected += rep.Blobs
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, d := range pushed {
		rc, err := r.Fetch(ctx, d)
		if err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
		raw, err := content.ReadAll(rc, d)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range refs(raw) {
			desc, err := r.Blobs().Resolve(ctx, l.String())
			if err != nil {
				t.Fatalf("version %d: blob %s: %v", i, l, err)
			}
			rc, err := r.Blobs().Fetch(ctx, desc)
			if err != nil {
				t.Fatalf("version %d: blob %s: %v", i, l, err)
			}
			if _, err := content.ReadAll(rc, desc); err != nil { // verifies size and digest
				t.Errorf("version %d: blob %s: %v", i, l, err)
			}
			rc.Close()
		}
	}
	t.Logf("%d blobs collected while %d pushes reused garbage; every push whole", collected, n)
}
