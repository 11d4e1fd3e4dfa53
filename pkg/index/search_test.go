package index

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type fixture struct {
	repo, version, stage, framework string
	acc                             float64
	team                            string
	day                             int
}

var fixtures = []fixture{
	{"team/fraud", "1.0.0", "", "pytorch", 0.81, "fraud", 1},
	{"team/fraud", "1.1.0", "staging", "pytorch", 0.91, "fraud", 2},
	{"team/fraud", "1.2.0", "production", "pytorch", 0.95, "fraud", 3},
	{"team/risk", "2.0.0", "production", "sklearn", 0.88, "risk", 4},
	{"team/risk", "2.1.0", "canary", "sklearn", 0.93, "risk", 5},
	{"lab/o'brien", "0.1.0", "", "jax", 0.5, "it's", 6},
}

func openFixture(t testing.TB) *Index {
	t.Helper()
	return openFixtureAt(t, "sqlite:"+filepath.Join(t.TempDir(), "index.db"))
}

// openFixtureAt opens the index at dsn and fills it with fixtures.
func openFixtureAt(t testing.TB, dsn string) *Index {
	t.Helper()
	idx := openAt(t, dsn)
	ctx := context.Background()
	for i, f := range fixtures {
		layer := model.LayerDescriptor(model.File{Path: "w.safetensors", Mode: 0o644, Size: 1, Kind: model.KindWeight}, digest.FromString(fmt.Sprint(i)))
		meta := model.Metadata{Created: time.Date(2026, 3, f.day, 0, 0, 0, 0, time.UTC), Framework: f.framework,
			Metrics: map[string]float64{"accuracy": f.acc}, Labels: map[string]string{"team": f.team}, Params: map[string]string{"lr": fmt.Sprint(0.001 * float64(i+1))}}
		_, raw, err := model.Pack(meta, []ocispec.Descriptor{layer})
		if err != nil {
			t.Fatal(err)
		}
		m, err := Describe(f.repo, ocispec.MediaTypeImageManifest, raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := idx.PutManifest(ctx, m, f.version); err != nil {
			t.Fatal(err)
		}
		if f.stage != "" {
			if err := idx.PutManifest(ctx, m, f.stage); err != nil {
				t.Fatal(err)
			}
		}
	}
	return idx
}

func search(t *testing.T, idx *Index, q, order string) ([]string, error) {
	t.Helper()
	n, err := query.Parse(q)
	if err != nil {
		return nil, err
	}
	rows, err := idx.Search(context.Background(), SearchOptions{Query: n, OrderBy: order})
	var out []string
	for _, r := range rows {
		out = append(out, r.Repository+":"+strings.Join(r.Versions, ","))
	}
	return out, err
}

func TestSearch(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(testing.TB) string) {
		idx := openFixtureAt(t, dsn(t))
		for q, want := range map[string]string{
			``:                        "lab/o'brien:0.1.0 team/risk:2.1.0 team/risk:2.0.0 team/fraud:1.2.0 team/fraud:1.1.0 team/fraud:1.0.0",
			`metrics.accuracy >= 0.9`: "team/risk:2.1.0 team/fraud:1.2.0 team/fraud:1.1.0",
			`metrics.accuracy > 0.9 and stage = 'production'`:                "team/fraud:1.2.0",
			`stage = 'production' or stage = "canary"`:                       "team/risk:2.1.0 team/risk:2.0.0 team/fraud:1.2.0",
			`not (framework = 'pytorch') and metrics.accuracy < 0.9`:         "lab/o'brien:0.1.0 team/risk:2.0.0",
			`labels.team in ('fraud', 'risk') and version like '1.%'`:        "team/fraud:1.2.0 team/fraud:1.1.0 team/fraud:1.0.0",
			`repository like 'team/%' and created >= '2026-03-04T00:00:00Z'`: "team/risk:2.1.0 team/risk:2.0.0",
			`stage != 'production' AND framework != 'jax'`:                   "team/risk:2.1.0 team/fraud:1.1.0 team/fraud:1.0.0",
			`labels.team = 'it''s'`:                                          "lab/o'brien:0.1.0",
			`params.lr = '0.002'`:                                            "team/fraud:1.1.0",
			`metrics.accuracy in (0.5, 0.88)`:                                "lab/o'brien:0.1.0 team/risk:2.0.0",
			`metrics.missing > 0`:                                            "",
			`((metrics.accuracy >= 0.95)) or not not labels.team = 'risk'`:   "team/risk:2.1.0 team/risk:2.0.0 team/fraud:1.2.0",
		} {
			got, err := search(t, idx, q, "")
			if err != nil {
				t.Errorf("%s: %v", q, err)
				continue
			}
			if strings.Join(got, " ") != want {
				t.Errorf("%s:\n got %s\nwant %s", q, strings.Join(got, " "), want)
			}
		}
		got, _ := search(t, idx, `repository like 'team/%'`, "metrics.accuracy desc")
		if strings.Join(got, " ") != "team/fraud:1.2.0 team/risk:2.1.0 team/fraud:1.1.0 team/risk:2.0.0 team/fraud:1.0.0" {
			t.Errorf("order by accuracy: %v", got)
		}
		rows, _ := idx.Search(context.Background(), SearchOptions{Limit: 2, Offset: 1, OrderBy: "version asc"})
		if len(rows) != 2 || rows[0].Versions[0] != "1.0.0" || rows[1].Versions[0] != "1.1.0" || rows[0].Metrics["accuracy"] != 0.81 || rows[0].Labels["team"] != "fraud" {
			t.Errorf("paged rows: %+v", rows)
		}
	})
}

func TestSearchErrorsNamePositions(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(testing.TB) string) {
		idx := openFixtureAt(t, dsn(t))
		for q, pos := range map[string]int{
			`metrics.accuracy >`:          18,
			`metrics.accuracy >= 'high'`:  0,
			`(stage = 'production'`:       21,
			`framework = 'x' and`:         19,
			`framework == 'x'`:            11,
			`owner = 'me'`:                0,
			`stage = 'a' or or`:           15,
			`labels.team = 'unterminated`: 14,
			`framework ~ 'x'`:             10,
			`stage > 'production'`:        0,
			`metrics.accuracy like '0.%'`: 0,
			strings.Repeat("(", 100) + "stage = 'x'" + strings.Repeat(")", 100): 65,
		} {
			_, err := search(t, idx, q, "")
			var qe *query.Error
			if !errors.As(err, &qe) {
				t.Errorf("%q: %v, want a query error", q, err)
				continue
			}
			if qe.Pos != pos {
				t.Errorf("%q: error at %d (%s), want %d", q, qe.Pos, qe.Msg, pos)
			}
		}
		if _, err := search(t, idx, "", "metrics.accuracy sideways"); err == nil {
			t.Error("a bad order_by was accepted")
		}
	})
}

// Values are bound, never spliced: hostile strings match nothing and leave
// the tables whole.
func TestSearchInjection(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(testing.TB) string) {
		idx := openFixtureAt(t, dsn(t))
		for _, q := range []string{
			`repository = ''' OR 1=1 --'`,
			`labels.team = 'x'' OR ''1''=''1'`,
			`framework = '; DROP TABLE versions; --'`,
			`stage in ('production'') OR 1=1 --', 'x')`,
			`metrics.accuracy > 0 and repository like '%'' UNION SELECT * FROM tags --'`,
		} {
			got, err := search(t, idx, q, "")
			if err != nil {
				t.Errorf("%s: %v", q, err)
			}
			if len(got) != 0 {
				t.Errorf("%s matched %v", q, got)
			}
		}
		all, _ := search(t, idx, "", "")
		if len(all) != len(fixtures) {
			t.Errorf("tables damaged: %d versions left", len(all))
		}
	})
}

func FuzzSearch(f *testing.F) {
	for _, s := range []string{`metrics.accuracy >= 0.9 and (stage = 'production' or not labels.team in ('a', 'b'))`,
		`repository like 'team/%'`, `created < "2026-01-01"`, `version = '1.0''0'`, `((((`, `not not not framework = 'x'`} {
		f.Add(s)
	}
	idx := openFixture(f)
	f.Fuzz(func(t *testing.T, q string) {
		n, err := query.Parse(q)
		if err != nil {
			var qe *query.Error
			if !errors.As(err, &qe) || qe.Pos < 0 || qe.Pos > len(q) {
				t.Fatalf("Parse(%q): %v", q, err)
			}
			return
		}
		if _, err := idx.Search(context.Background(), SearchOptions{Query: n}); err != nil {
			var qe *query.Error
			if !errors.As(err, &qe) {
				t.Fatalf("Search(%q): %v", q, err)
			}
		}
		if all, err := idx.Search(context.Background(), SearchOptions{Limit: 1000}); err != nil || len(all) != len(fixtures) {
			t.Fatalf("after %q the index holds %d versions (%v)", q, len(all), err)
		}
	})
}

// The three ways plan can evaluate a query (selective driver, row checks
// along an index, sets) must agree on every query of TestSearch.
func TestPlansAgree(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(testing.TB) string) {
		idx := openFixtureAt(t, dsn(t))
		ctx := context.Background()
		digests := func(q string, args []any) []string {
			rows, err := idx.db.QueryContext(ctx, q, args...)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			defer rows.Close()
			var out []string
			for rows.Next() {
				var r, d string
				rows.Scan(&r, &d)
				out = append(out, r+"@"+d)
			}
			slices.Sort(out)
			return out
		}
		for _, src := range []string{
			`metrics.accuracy >= 0.9`, `metrics.accuracy > 0.9 and stage = 'production'`, `stage = 'production' or stage = "canary"`,
			`not (framework = 'pytorch') and metrics.accuracy < 0.9`, `labels.team in ('fraud', 'risk') and version like '1.%'`,
			`repository like 'team/%' and created >= '2026-03-04T00:00:00Z'`, `stage != 'production' AND framework != 'jax'`,
			`labels.team = 'it''s'`, `metrics.accuracy in (0.5, 0.88)`, `((metrics.accuracy >= 0.95)) or not not labels.team = 'risk'`,
			`repository like 'team/r_sk'`, `version != '1.0.0' and not stage in ('production', 'staging')`,
		} {
			n, err := query.Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			var a1, a2 []any
			set, err := idx.d.compile(n, &a1)
			if err != nil {
				t.Fatal(err)
			}
			row, err := idx.d.compileRow(n, &a2)
			if err != nil {
				t.Fatal(err)
			}
			bySet := digests(`SELECT repo, digest FROM versions WHERE (repo, digest) IN (`+set+`)`, a1)
			byRow := digests(`SELECT v.repo, v.digest FROM versions v WHERE `+row, a2)
			p, err := idx.plan(ctx, n, ordering{}, 100)
			if err != nil {
				t.Fatal(err)
			}
			byPlan := digests(`SELECT v.repo, v.digest FROM `+p.from+` `+p.where, p.args)
			if !slices.Equal(bySet, byRow) || !slices.Equal(bySet, byPlan) {
				t.Errorf("%s:\n sets %v\n rows %v\n plan %v", src, bySet, byRow, byPlan)
			}
		}
	})
}
