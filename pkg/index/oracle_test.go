package index

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/pgtest"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fact is what the oracle knows of one version.
type fact struct {
	repo, digest, framework, created string
	versions, stages                 []string
	metrics                          map[string]float64
	labels                           map[string]string
}

// oracleOrder compares two versions as order_by orders them: the key
// asked, versions lacking a metric last, then ties by repository and
// digest, in the direction asked for created, repository and metrics,
// ascending for framework.
func oracleOrder(order string, a, b fact) int {
	field, dir, _ := strings.Cut(order, " ")
	sign := 1
	if dir == "desc" {
		sign = -1
	}
	ties := sign * cmp.Or(strings.Compare(a.repo, b.repo), strings.Compare(a.digest, b.digest))
	switch {
	case field == "created":
		return cmp.Or(sign*strings.Compare(a.created, b.created), ties)
	case field == "repository":
		return ties
	case field == "framework":
		return cmp.Or(sign*strings.Compare(a.framework, b.framework), strings.Compare(a.repo, b.repo), strings.Compare(a.digest, b.digest))
	case strings.HasPrefix(field, "metrics."):
		name := strings.TrimPrefix(field, "metrics.")
		va, oka := a.metrics[name]
		vb, okb := b.metrics[name]
		switch {
		case oka != okb && oka:
			return -1
		case oka != okb:
			return 1
		case !oka:
			return ties
		}
		return cmp.Or(sign*cmp.Compare(va, vb), ties)
	}
	panic("oracleOrder: no order " + order)
}

// eval is a plain Go evaluator of the query language: the oracle the
// SQL plans are checked against.
func eval(n query.Node, f fact) bool {
	switch n := n.(type) {
	case nil:
		return true
	case query.And:
		return eval(n.L, f) && eval(n.R, f)
	case query.Or:
		return eval(n.L, f) || eval(n.R, f)
	case query.Not:
		return !eval(n.X, f)
	case query.Cmp:
		if (n.Field == "stage" || n.Field == "version") && n.Op == "!=" {
			eq := n
			eq.Op = "="
			return !eval(eq, f)
		}
		var strs []string
		num, isNum := 0.0, false
		switch n.Field {
		case "metrics":
			v, ok := f.metrics[n.Key]
			if !ok {
				return false
			}
			num, isNum = v, true
		case "labels":
			v, ok := f.labels[n.Key]
			if !ok {
				return false
			}
			strs = []string{v}
		case "framework":
			strs = []string{f.framework}
		case "created":
			strs = []string{f.created}
		case "repository":
			strs = []string{f.repo}
		case "stage":
			strs = f.stages
		case "version":
			strs = f.versions
		}
		if isNum {
			return slices.ContainsFunc(n.Vals, func(v query.Value) bool { return cmpNum(n.Op, num, v.Num) })
		}
		for _, s := range strs {
			for _, v := range n.Vals {
				if cmpStr(n.Op, s, v.Str) {
					return true
				}
			}
		}
		return false
	}
	panic(fmt.Sprintf("%T", n))
}

func cmpNum(op string, a, b float64) bool {
	switch op {
	case "=", "in":
		return a == b
	case "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	case ">=":
		return a >= b
	}
	return false
}

func cmpStr(op, a, b string) bool {
	switch op {
	case "like": // the oracle knows prefix patterns only
		return strings.HasPrefix(a, strings.TrimSuffix(b, "%"))
	case "in":
		return a == b
	}
	c := strings.Compare(a, b)
	return cmpNum(op, float64(c), 0)
}

// A generated registry of 3,000 versions and 120 random queries: every plan's
// answer equals the oracle's, in the order asked.
//
// It runs on SQLite and PostgreSQL at once, loaded alike, and the two
// must also give the same rows in the same order, page by page.
func TestSearchMatchesOracle(t *testing.T) {
	sqlite := openAt(t, filepath.Join(t.TempDir(), "index.db"))
	postgres := openAt(t, pgtest.DB(t))
	indexes := map[string]*Index{"sqlite": sqlite, "postgres": postgres}
	rng := rand.New(rand.NewPCG(7, 9))
	ctx := context.Background()
	shipped, window, stages, small := selective, walkWindow, stageSetCap, smallSet
	t.Cleanup(func() { selective, walkWindow, stageSetCap, smallSet = shipped, window, stages, small })
	var facts []fact
	frameworks := []string{"pytorch", "sklearn", "jax"}
	for m := range 60 {
		repo := fmt.Sprintf("team-%d/model-%02d", m%6, m)
		var manifests []Manifest
		tags := map[string]digest.Digest{}
		for v := range 50 {
			meta := model.Metadata{
				Created:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(100000)) * time.Minute),
				Framework: frameworks[rng.IntN(3)],
				Metrics:   map[string]float64{"accuracy": float64(rng.IntN(100)) / 100},
				Labels:    map[string]string{"team": fmt.Sprintf("t%d", rng.IntN(8))},
			}
			if rng.IntN(3) == 0 {
				meta.Metrics["f1"] = float64(rng.IntN(100)) / 100
			}
			layer := model.LayerDescriptor(model.File{Path: "w.bin", Mode: 0o644, Size: 1, Kind: model.KindWeight}, digest.FromString(fmt.Sprint(m, v)))
			_, raw, err := model.Pack(meta, []ocispec.Descriptor{layer})
			if err != nil {
				t.Fatal(err)
			}
			im, _ := Describe(repo, ocispec.MediaTypeImageManifest, raw)
			manifests = append(manifests, im)
			f := fact{repo: repo, digest: im.Digest.String(), framework: meta.Framework, created: meta.Created.Format(time.RFC3339),
				versions: []string{fmt.Sprintf("%d.%d.0", m%3, v)}, metrics: meta.Metrics, labels: meta.Labels}
			tags[f.versions[0]] = im.Digest
			facts = append(facts, f)
		}
		for _, s := range []string{"production", "staging", "canary"} {
			i := len(facts) - 1 - rng.IntN(50)
			tags[s] = digest.Digest(facts[i].digest)
			facts[i].stages = append(facts[i].stages, s)
		}
		for _, idx := range indexes {
			if err := idx.ReplaceRepo(ctx, repo, Content{Manifests: manifests, Tags: tags}); err != nil {
				t.Fatal(err)
			}
		}
	}
	atoms := []string{"metrics.accuracy >= 0.5", "metrics.accuracy < 0.1", "metrics.f1 > 0.7", "metrics.accuracy in (0.1, 0.2, 0.3)",
		"labels.team = 't3'", "labels.team != 't1'", "framework = 'jax'", "framework in ('pytorch', 'jax')", "stage = 'production'",
		"stage != 'canary'", "stage in ('staging', 'canary')", "repository like 'team-2/%'", "repository = 'team-0/model-00'",
		"created >= '2026-02-15T00:00:00Z'", "version like '1.%'", "version = '2.7.0'"}
	var gen func(depth int) string
	gen = func(depth int) string {
		if depth > 2 || rng.IntN(3) == 0 {
			return atoms[rng.IntN(len(atoms))]
		}
		switch rng.IntN(3) {
		case 0:
			return "(" + gen(depth+1) + " and " + gen(depth+1) + ")"
		case 1:
			return "(" + gen(depth+1) + " or " + gen(depth+1) + ")"
		}
		return "not " + gen(depth+1)
	}
	for i := range 120 {
		src := gen(0)
		if i%5 == 0 {
			src = atoms[rng.IntN(len(atoms))] + " and " + gen(1)
		}
		n, err := query.Parse(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		var want []fact
		for _, f := range facts {
			if eval(n, f) {
				want = append(want, f)
			}
		}
		for _, order := range []string{"created desc", "metrics.accuracy desc", "metrics.f1 asc", "repository asc", "framework desc"} {
			sorted := slices.Clone(want)
			slices.SortFunc(sorted, func(a, b fact) int { return oracleOrder(order, a, b) })
			var exp []string
			for _, f := range sorted {
				exp = append(exp, f.repo+"@"+f.digest)
			}
			byBackend := map[string][]string{}
			// Each backend, with the thresholds as shipped (every
			// comparison here is selective at 3,000 versions); with none
			// selective, so conjunctions go to the sets (each comparison
			// matches fewer than smallSet); with no small sets either, so
			// the walks in created, repository and metric order run; and
			// with windows of 40 entries, so walks stop short and the sets
			// answer, and stage checks probe instead of hashing: the same
			// rows in the same order from each plan.
			for _, run := range []struct {
				name                       string
				cap, window, stages, small int
			}{{"sqlite", shipped, window, stages, small}, {"postgres", shipped, window, stages, small},
				{"sqlite sets", 0, window, stages, small}, {"postgres sets", 0, window, stages, small},
				{"sqlite walks", 0, window, stages, 0}, {"postgres walks", 0, window, stages, 0},
				{"sqlite narrow", 0, 40, 0, 0}, {"postgres narrow", 0, 40, 0, 0}} {
				name, idx := run.name, indexes[strings.Fields(run.name)[0]]
				selective, walkWindow, stageSetCap, smallSet = run.cap, run.window, run.stages, run.small
				rows, err := idx.Search(ctx, SearchOptions{Query: n, OrderBy: order, Limit: 1000})
				if err != nil {
					t.Fatalf("%s: %s: %v", name, src, err)
				}
				var got []string
				for _, r := range rows {
					got = append(got, r.Repository+"@"+r.Digest)
				}
				// A second page, as a client pages: its rows follow the first's.
				page, err := idx.Search(ctx, SearchOptions{Query: n, OrderBy: order, Limit: 7, Offset: 7})
				if err != nil {
					t.Fatalf("%s: %s: %v", name, src, err)
				}
				var pageKeys []string
				for _, r := range page {
					pageKeys = append(pageKeys, r.Repository+"@"+r.Digest)
				}
				byBackend[name] = append(append(byBackend[name], pageKeys...), got...)
				// Every plan answers the oracle's rows in the oracle's order
				// (ties included), and the second page is the oracle's.
				if !slices.Equal(got, exp[:min(len(exp), 1000)]) {
					t.Fatalf("%s: %s (order %s): %d rows, the oracle finds %d, or in another order", name, src, order, len(got), len(exp))
				}
				if !slices.Equal(pageKeys, exp[min(len(exp), 7):min(len(exp), 14)]) {
					t.Fatalf("%s: %s (order %s): the second page of 7 is not the oracle's", name, src, order)
				}
			}
			selective, walkWindow, stageSetCap, smallSet = shipped, window, stages, small
			if !slices.Equal(byBackend["sqlite"], byBackend["postgres"]) || !slices.Equal(byBackend["sqlite walks"], byBackend["postgres walks"]) ||
				!slices.Equal(byBackend["sqlite narrow"], byBackend["postgres narrow"]) || !slices.Equal(byBackend["sqlite sets"], byBackend["postgres sets"]) {
				t.Fatalf("%s (order %s): SQLite and PostgreSQL answer in different orders", src, order)
			}
		}
	}
}
