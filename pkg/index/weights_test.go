package index

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/modelreg/modelreg/pkg/query"
	"github.com/modelreg/modelreg/pkg/weights"
	"github.com/opencontainers/go-digest"
)

// Weights facts are searchable as weights.NAME, come back on rows, and a
// version without them is listed for the backfill until it is read.
func TestWeightsSearch(t *testing.T) {
	idx := openFixture(t)
	ctx := context.Background()
	rows, _ := idx.Search(ctx, SearchOptions{Limit: 100})
	if left, _ := idx.Underived(ctx, 100); len(left) != len(rows) {
		t.Fatalf("%d versions to read, %d versions", len(left), len(rows))
	}
	digestOf := func(version string) (string, digest.Digest) {
		for _, r := range rows {
			if slices.Contains(r.Versions, version) {
				return r.Repository, digest.Digest(r.Digest)
			}
		}
		t.Fatalf("no version %s", version)
		return "", ""
	}
	repo, d := digestOf("1.2.0")
	if err := idx.PutWeights(ctx, repo, d, &weights.Facts{Format: "gguf", Tensors: 291, Parameters: 8_030_261_248, DTypes: []string{"F32", "Q4_K", "Q6_K"},
		Architecture: "llama", Quantization: "Q4_K_M", ContextLength: 131072}); err != nil {
		t.Fatal(err)
	}
	repo2, d2 := digestOf("2.0.0")
	idx.PutWeights(ctx, repo2, d2, &weights.Facts{Format: "safetensors", Tensors: 10, Parameters: 1_000_000, DTypes: []string{"BF16"}})
	repo3, d3 := digestOf("1.0.0")
	idx.PutWeights(ctx, repo3, d3, nil) // read: no weights files
	for q, want := range map[string]string{
		"weights.parameters > 7e9":                                     "[team/fraud:1.2.0]",
		"weights.parameters >= 1e6 and weights.format = 'safetensors'": "[team/risk:2.0.0]",
		"weights.architecture = 'llama' and stage = 'production'":      "[team/fraud:1.2.0]",
		"weights.quantization in ('Q4_K_M', 'Q5_K_M')":                 "[team/fraud:1.2.0]",
		"weights.dtype = 'BF16' or weights.context_length >= 100000":   "[team/fraud:1.2.0 team/risk:2.0.0]",
		"not weights.tensors > 0 and repository = 'team/fraud'":        "[team/fraud:1.1.0 team/fraud:1.0.0]",
	} {
		got, err := search(t, idx, q, "repository")
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("%s: %v %v, want %s", q, got, err, want)
		}
	}
	n, _ := query.Parse("weights.parameters > 7e9")
	got, _ := idx.Search(ctx, SearchOptions{Query: n})
	if len(got) != 1 || got[0].Weights == nil || got[0].Weights.Quantization != "Q4_K_M" || got[0].Weights.ContextLength != 131072 || fmt.Sprint(got[0].Weights.DTypes) != "[F32 Q4_K Q6_K]" {
		t.Errorf("row weights: %+v", got)
	}
	if left, _ := idx.Underived(ctx, 100); len(left) != len(rows)-3 {
		t.Errorf("%d versions left to read after 3 were, of %d", len(left), len(rows))
	}
	for _, bad := range []string{"weights.parameters = 'many'", "weights.architecture > 3", "weights.parameters like '7%'", "weights.size > 1"} {
		if _, err := query.Parse(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}

// MarkAllRead leaves no version for the backfill, and keeps facts read.
func TestMarkAllRead(t *testing.T) {
	idx := openFixture(t)
	ctx := context.Background()
	rows, _ := idx.Search(ctx, SearchOptions{Limit: 1})
	idx.PutWeights(ctx, rows[0].Repository, digest.Digest(rows[0].Digest), &weights.Facts{Format: "gguf", Tensors: 1, Parameters: 5})
	if err := idx.MarkAllRead(ctx); err != nil {
		t.Fatal(err)
	}
	if left, err := idx.Underived(ctx, 100); err != nil || len(left) != 0 {
		t.Errorf("after MarkAllRead, %d versions left to read (%v)", len(left), err)
	}
	if got, _ := search(t, idx, "weights.parameters = 5", ""); len(got) != 1 {
		t.Errorf("the facts read before were lost: %v", got)
	}
}
