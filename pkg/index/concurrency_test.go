package index

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestConcurrentSearchAndWrites runs 50 goroutines searching and listing
// models while 5 write through the index API (the server's read and write
// paths at once), and checks that every read succeeds and shows a state
// the writers made: each writer's versions 0..n-1 for some n (a version
// and its tag are one transaction), each row whole (its tag, metric and
// label agree), at most one version in the stage, and counts that never
// go back for a reader.
func TestConcurrentSearchAndWrites(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(testing.TB) string) { concurrentSearchAndWrites(t, openAt(t, dsn(t))) })
}

func concurrentSearchAndWrites(t *testing.T, idx *Index) {
	const writers, perWriter, searchers = 5, 30, 50
	ctx := context.Background()

	manifest := func(w, i int) Manifest {
		layer := model.LayerDescriptor(model.File{Path: "w.safetensors", Mode: 0o644, Size: 1, Kind: model.KindWeight}, digest.FromString(fmt.Sprint(w, i)))
		meta := model.Metadata{Created: time.Date(2026, 3, 1, 0, i, 0, 0, time.UTC), Framework: "pytorch",
			Metrics: map[string]float64{"seq": float64(i)}, Labels: map[string]string{"writer": fmt.Sprint(w)}}
		_, raw, err := model.Pack(meta, []ocispec.Descriptor{layer})
		if err != nil {
			t.Error(err)
		}
		m, err := Describe(fmt.Sprintf("w/%d", w), ocispec.MediaTypeImageManifest, raw)
		if err != nil {
			t.Error(err)
		}
		return m
	}

	var done sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		done.Add(1)
		go func() {
			defer done.Done()
			repo := fmt.Sprintf("w/%d", w)
			for i := range perWriter {
				finish, err := idx.Begin(ctx, repo)
				if err != nil {
					t.Errorf("writer %d: begin: %v", w, err)
					return
				}
				m := manifest(w, i)
				if err := idx.PutManifest(ctx, m, fmt.Sprintf("1.%d.0", i)); err != nil {
					t.Errorf("writer %d: put %d: %v", w, i, err)
					return
				}
				if err := idx.PutManifest(ctx, m, "production"); err != nil {
					t.Errorf("writer %d: stage %d: %v", w, i, err)
					return
				}
				finish()
				// A write is seen by the writer's next read, although
				// the searchers keep the same question cached.
				mine, err := idx.Search(ctx, SearchOptions{Query: query.And{
					L: query.Cmp{Field: "labels", Key: "writer", Op: "=", Vals: []query.Value{{Str: fmt.Sprint(w)}}},
					R: query.Cmp{Field: "stage", Op: "=", Vals: []query.Value{{Str: "production"}}},
				}})
				if err != nil || len(mine) != 1 || !slices.Contains(mine[0].Versions, fmt.Sprintf("1.%d.0", i)) {
					t.Errorf("writer %d: right after staging 1.%d.0, the stage search answered %v, %v", w, i, mine, err)
					return
				}
			}
		}()
	}

	var readers sync.WaitGroup
	var mu sync.Mutex
	reads := 0
	for s := range searchers {
		readers.Add(1)
		go func() {
			defer readers.Done()
			w := s % writers
			repo := fmt.Sprintf("w/%d", w)
			q, err := query.Parse(fmt.Sprintf("labels.writer = '%d' and framework = 'pytorch'", w))
			if err != nil {
				t.Error(err)
				return
			}
			seen, seenModels := 0, 0
			for n := 0; ; n++ {
				select {
				case <-stop:
					mu.Lock()
					reads += n
					mu.Unlock()
					return
				default:
				}
				rows, err := idx.Search(ctx, SearchOptions{Query: q, OrderBy: "metrics.seq asc", Limit: 1000})
				if err != nil {
					t.Errorf("search: %v", err)
					return
				}
				if len(rows) < seen {
					t.Errorf("writer %d: a later search saw %d versions, an earlier one %d", w, len(rows), seen)
				}
				seen = len(rows)
				staged := 0
				for i, r := range rows {
					if r.Repository != repo || r.Metrics["seq"] != float64(i) || r.Labels["writer"] != fmt.Sprint(w) ||
						!slices.Equal(r.Versions, []string{fmt.Sprintf("1.%d.0", i)}) {
						t.Errorf("writer %d: row %d of %d is %+v", w, i, len(rows), r)
						return
					}
					if slices.Contains(r.Stages, "production") {
						staged++
					}
				}
				if staged > 1 {
					t.Errorf("writer %d: %d versions in production at once", w, staged)
				}
				if n%5 == 0 {
					ms, err := idx.Models(ctx, "", 100)
					if err != nil {
						t.Errorf("models: %v", err)
						return
					}
					for _, m := range ms {
						if m.Repository == repo {
							if m.Versions < seenModels {
								t.Errorf("%s: %d versions listed after %d", repo, m.Versions, seenModels)
							}
							seenModels = m.Versions
						}
					}
				}
			}
		}()
	}
	done.Wait()
	close(stop)
	readers.Wait()
	t.Logf("%d searches during %d writes", reads, writers*perWriter*2)

	for w := range writers {
		q, _ := query.Parse(fmt.Sprintf("labels.writer = '%d'", w))
		rows, err := idx.Search(ctx, SearchOptions{Query: q, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != perWriter {
			t.Errorf("writer %d: %d versions at the end, want %d", w, len(rows), perWriter)
		}
		if d, _ := idx.Tag(ctx, fmt.Sprintf("w/%d", w), "production"); d != manifest(w, perWriter-1).Digest {
			t.Errorf("writer %d: production is %s", w, d)
		}
	}
	if p, err := idx.Pending(ctx); err != nil || len(p) != 0 {
		t.Errorf("pending after the writes: %v %v", p, err)
	}
}
