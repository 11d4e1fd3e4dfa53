package index

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/query"
)

// Names chosen where SQLite and PostgreSQL differ unless made to agree:
// case (SQLite's LIKE folds ASCII case, a linguistic collation sorts "B"
// beside "b"), the wildcards and GLOB's metacharacters as literals, \
// (PostgreSQL's default LIKE escape), and a non-ASCII letter.
var trickyRepos = []string{"a/B", "a/b", "a/b2", "a/_x", "a/%y", "a/é", "a/e", "a/Z", "a/~", "a/[q]", "a/*s", "a/?t", `a/\z`, "a/b-c", "a/b.c", "a/bc"}

func TestBackendsAgree(t *testing.T) {
	byBytes := slices.Clone(trickyRepos)
	slices.Sort(byBytes) // Go compares strings by bytes
	backends(t, func(t *testing.T, dsn func(testing.TB) string) {
		idx := openAt(t, dsn(t))
		ctx := context.Background()
		for _, repo := range trickyRepos {
			if err := idx.PutManifest(ctx, version(t, repo, repo), "1.0.0"); err != nil {
				t.Fatal(err)
			}
		}
		for q, want := range map[string]string{
			`repository like 'a/b%'`:                     "a/b a/b-c a/b.c a/b2 a/bc",
			`repository like 'A/%'`:                      "",
			`repository like 'a/_'`:                      "a/B a/Z a/b a/e a/~ a/é",
			`repository like '%_x'`:                      "a/_x",
			`repository like 'a/%%y'`:                    "a/%y",
			`repository like '%[q]'`:                     "a/[q]",
			`repository like '%*s'`:                      "a/*s",
			`repository like '%?t'`:                      "a/?t",
			`repository like 'a/\z'`:                     `a/\z`,
			`repository like 'a/\%'`:                     `a/\z`,
			`repository like 'a/b_c'`:                    "a/b-c a/b.c",
			`repository like '%C'`:                       "",
			`repository >= 'a/b' and repository < 'a/c'`: "a/b a/b-c a/b.c a/b2 a/bc",
			`repository > 'a/Z'`:                         "a/[q] a/\\z a/_x a/b a/b-c a/b.c a/b2 a/bc a/e a/~ a/é",
			`repository = 'a/B'`:                         "a/B",
		} {
			n, err := query.Parse(q)
			if err != nil {
				t.Fatal(q, err)
			}
			rows, err := idx.Search(ctx, SearchOptions{Query: n, OrderBy: "repository asc"})
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, r.Repository)
			}
			if strings.Join(got, " ") != want {
				t.Errorf("%s:\n got %s\nwant %s", q, strings.Join(got, " "), want)
			}
		}
		// The whole list by name, and paged by name three at a time (the
		// model list's "after" cursor), is in byte order.
		rows, err := idx.Search(ctx, SearchOptions{OrderBy: "repository asc"})
		if err != nil {
			t.Fatal(err)
		}
		var all []string
		for _, r := range rows {
			all = append(all, r.Repository)
		}
		if !slices.Equal(all, byBytes) {
			t.Errorf("by repository:\n got %q\nwant %q", all, byBytes)
		}
		var paged []string
		for after := ""; ; {
			page, err := idx.Models(ctx, after, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				paged = append(paged, m.Repository)
			}
			after = page[len(page)-1].Repository
		}
		if !slices.Equal(paged, byBytes) {
			t.Errorf("models paged by name:\n got %q\nwant %q", paged, byBytes)
		}
		if repos, err := idx.Repos(ctx); err != nil || !slices.Equal(repos, byBytes) {
			t.Errorf("repos: %q, %v", repos, err)
		}
	})
}
