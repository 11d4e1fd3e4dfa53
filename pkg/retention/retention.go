// Package retention decides which model versions a registry's retention
// rules let go. It is a pure function of the versions and the rules, so
// a dry run and the real run decide alike, and the decision can be tested
// without a registry: `modelreg serve` gathers the facts (from its index
// and storage) and deletes through its gate, recording each deletion.
package retention

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/modelreg/modelreg/pkg/config"
)

// Version is what the decision needs to know about one model version
// (one manifest digest in one repository).
type Version struct {
	Repository string
	Digest     string
	// Tags are its version tags.
	Tags []string
	// Pushed is when storage took it; the newest N and "younger than" are
	// by this time.
	Pushed time.Time
	// Stages are the stages pointing at it now.
	Stages []string
	// EverIn are the stages the trusted history says it ever entered.
	EverIn []string
	// Inputs are the digests of its lineage inputs (datasets, base
	// models): a version with one of these digests in this registry is an
	// ancestor, kept while this one is.
	Inputs []string
}

// Decision is the verdict on one version.
type Decision struct {
	Version
	// Keep is false when the rules let the version go.
	Keep bool
	// Why says which rule kept or lets it go, for the report and the
	// tombstone: "retention: rule team/** keep newest 5".
	Why string
}

// Plan decides every version at time now. Versions of a repository that
// no rule matches are kept. A version is kept when a stage points at it,
// when it ever entered a stage, when the first matching rule keeps it
// (newest N, younger than D), or when it is a lineage ancestor of a kept
// version, in any repository. only, when not empty, is a repository
// pattern: versions outside it are kept whatever the rules say (they
// still keep their ancestors). Decisions come in the order of versions.
func Plan(r config.Retention, versions []Version, only string, now time.Time) []Decision {
	out := make([]Decision, len(versions))
	byRepo := map[string][]int{}
	for i, v := range versions {
		out[i] = Decision{Version: v}
		byRepo[v.Repository] = append(byRepo[v.Repository], i)
	}
	for repo, idx := range byRepo {
		rule := r.Match(repo)
		outside := only != "" && !matches(only, repo)
		// Newest first; ties by digest, so the decision is stable.
		slices.SortFunc(idx, func(a, b int) int {
			if c := versions[b].Pushed.Compare(versions[a].Pushed); c != 0 {
				return c
			}
			return strings.Compare(versions[a].Digest, versions[b].Digest)
		})
		for rank, i := range idx {
			v, d := versions[i], &out[i]
			d.Keep = true
			switch {
			case len(v.Stages) > 0:
				d.Why = "in stage " + strings.Join(v.Stages, ", ")
			case len(v.EverIn) > 0:
				d.Why = "was in stage " + strings.Join(v.EverIn, ", ")
			case outside:
				d.Why = "outside " + only
			case rule == nil:
				d.Why = "no retention rule"
			case rank < rule.KeepNewest:
				d.Why = fmt.Sprintf("rule %s: among the newest %d", rule, rule.KeepNewest)
			case rule.KeepYoungerThan > 0 && now.Sub(v.Pushed) < time.Duration(rule.KeepYoungerThan):
				d.Why = fmt.Sprintf("rule %s: younger than %s", rule, rule.KeepYoungerThan)
			default:
				d.Keep = false
				d.Why = "retention: rule " + rule.String()
			}
		}
	}
	// Ancestors of kept versions are kept, transitively, across
	// repositories: a kept model must stay explainable.
	byDigest := map[string][]int{}
	for i, v := range versions {
		byDigest[v.Digest] = append(byDigest[v.Digest], i)
	}
	var queue []int
	for i := range out {
		if out[i].Keep {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, in := range versions[i].Inputs {
			for _, j := range byDigest[in] {
				if !out[j].Keep {
					out[j].Keep = true
					out[j].Why = "lineage ancestor of " + versions[i].Repository + "@" + versions[i].Digest
					queue = append(queue, j)
				}
			}
		}
	}
	return out
}

func matches(pattern, repo string) bool {
	ok, _ := doublestar.Match(pattern, repo)
	return ok
}
