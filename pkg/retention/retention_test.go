package retention

import (
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/config"
)

func TestPlan(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	// v is a version of repo pushed ago before now.
	v := func(repo, dg string, ago time.Duration) Version {
		return Version{Repository: repo, Digest: dg, Tags: []string{dg}, Pushed: now.Add(-ago)}
	}
	with := func(x Version, f func(*Version)) Version { f(&x); return x }
	rules := func(rs ...config.Rule) config.Retention { return config.Retention{Rules: rs} }
	newest := func(p string, n int) config.Rule { return config.Rule{Repositories: p, KeepNewest: n} }

	cases := []struct {
		name     string
		rules    config.Retention
		only     string
		versions []Version
		gone     []string // digests let go, in order of versions
		why      map[string]string
	}{{
		name:     "no rule keeps everything",
		rules:    rules(newest("other/*", 1)),
		versions: []Version{v("team/a", "a1", 3*day), v("team/a", "a2", 2*day)},
		why:      map[string]string{"a1": "no retention rule"},
	}, {
		name:     "keep newest 2 of 4",
		rules:    rules(newest("team/*", 2)),
		versions: []Version{v("team/a", "a1", 4*day), v("team/a", "a2", 3*day), v("team/a", "a3", 2*day), v("team/a", "a4", day)},
		gone:     []string{"a1", "a2"},
		why:      map[string]string{"a1": "retention: rule team/* keep newest 2"},
	}, {
		name:     "newest by push time whatever the order given",
		rules:    rules(newest("team/*", 1)),
		versions: []Version{v("team/a", "new", time.Hour), v("team/a", "old", 5*day)},
		gone:     []string{"old"},
	}, {
		name:     "younger than keeps recent ones beyond the newest N",
		rules:    rules(config.Rule{Repositories: "team/**", KeepNewest: 1, KeepYoungerThan: config.Duration(7 * day)}),
		versions: []Version{v("team/x/a", "a1", 30*day), v("team/x/a", "a2", 6*day), v("team/x/a", "a3", day)},
		gone:     []string{"a1"},
		why:      map[string]string{"a2": "younger than 7d", "a1": "keep newest 1, younger than 7d"},
	}, {
		name:     "one segment: team/* does not match team/x/a",
		rules:    rules(newest("team/*", 1)),
		versions: []Version{v("team/x/a", "a1", 3*day), v("team/x/a", "a2", day)},
	}, {
		name:     "first matching rule wins",
		rules:    rules(newest("team/keep", 10), newest("team/*", 1)),
		versions: []Version{v("team/keep", "k1", 3*day), v("team/keep", "k2", day), v("team/drop", "d1", 3*day), v("team/drop", "d2", day)},
		gone:     []string{"d1"},
	}, {
		name:  "a stage holds it, or it ever was in one",
		rules: rules(newest("**", 1)),
		versions: []Version{
			with(v("team/a", "prod", 9*day), func(x *Version) { x.Stages = []string{"production"} }),
			with(v("team/a", "was", 8*day), func(x *Version) { x.EverIn = []string{"staging"} }),
			v("team/a", "plain", 7*day),
			v("team/a", "newest", day),
		},
		gone: []string{"plain"},
		why:  map[string]string{"prod": "in stage production", "was": "was in stage staging"},
	}, {
		name:  "lineage ancestors of kept versions are kept, across repositories and transitively",
		rules: rules(newest("**", 1)),
		versions: []Version{
			v("team/base", "base1", 9*day),
			with(v("team/base", "base2", 8*day), func(x *Version) { x.Inputs = []string{"base1"} }),
			v("team/base", "base3", day),
			with(v("team/ft", "ft1", 2*day), func(x *Version) { x.Inputs = []string{"base2", "sha256:dataset"} }),
			v("team/ft", "ft0", 3*day),
		},
		gone: []string{"ft0"},
		why:  map[string]string{"base2": "lineage ancestor of team/ft@ft1", "base1": "lineage ancestor of team/base@base2"},
	}, {
		name:  "the ancestor of a deleted version is not kept for it",
		rules: rules(newest("**", 1)),
		versions: []Version{
			v("team/base", "base1", 9*day),
			v("team/base", "base2", day),
			with(v("team/ft", "ft0", 3*day), func(x *Version) { x.Inputs = []string{"base1"} }),
			v("team/ft", "ft1", 2*day),
		},
		gone: []string{"base1", "ft0"},
	}, {
		name:     "--repo limits the deletions, not the ancestors",
		rules:    rules(newest("**", 1)),
		only:     "team/ft",
		versions: []Version{v("team/base", "base1", 9*day), v("team/base", "base2", day), v("team/ft", "ft0", 3*day), v("team/ft", "ft1", 2*day)},
		gone:     []string{"ft0"},
		why:      map[string]string{"base1": "outside team/ft"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.rules, tc.versions, tc.only, now)
			var gone []string
			for _, d := range got {
				if !d.Keep {
					gone = append(gone, d.Digest)
				}
				if want, ok := tc.why[d.Digest]; ok && !strings.Contains(d.Why, want) {
					t.Errorf("%s: why %q, want it to say %q", d.Digest, d.Why, want)
				}
			}
			if strings.Join(gone, ",") != strings.Join(tc.gone, ",") {
				t.Errorf("let go %v, want %v; decisions: %+v", gone, tc.gone, got)
			}
		})
	}
}

func TestRetentionConfig(t *testing.T) {
	c, err := config.Parse([]byte("retention:\n  interval: 1d\n  grace: 90m\n  rules:\n    - repositories: team/**\n      keepNewest: 5\n      keepYoungerThan: 30d\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Retention
	if r.Interval.String() != "1d" || r.GraceOrDefault() != 90*time.Minute || r.Match("team/a/b").String() != "team/** keep newest 5, younger than 30d" {
		t.Errorf("parsed %+v", r)
	}
	for yaml, want := range map[string]string{
		"retention:\n  rules:\n    - repositories: team/*\n":                        "must keep something",
		"retention:\n  rules:\n    - keepNewest: 2\n":                               "repositories is required",
		"retention:\n  rules:\n    - repositories: '['\n      keepNewest: 1\n":      "invalid repository pattern",
		"retention:\n  interval: 10s\n":                                             "shorter than a minute",
		"retention:\n  grace: soon\n":                                               "expected e.g. 30d",
		"retention:\n  rules:\n    - repositories: a\n      keepNewst: 1\n":         "keepNewst",
		"retention:\n  rules:\n    - repositories: a\n      keepYoungerThan: 3w\n":  "expected e.g. 30d",
		"retention:\n  rules:\n    - repositories: a\n      keepYoungerThan: -1d\n": "whole number of days",
	} {
		if _, err := config.Parse([]byte(yaml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one saying %q", yaml, err, want)
		}
	}
}
