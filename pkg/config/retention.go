package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"go.yaml.in/yaml/v3"
)

// DefaultGrace is how long a new blob is safe from collection when the
// configuration names no grace: longer than any push takes between its
// first blob and its manifest.
const DefaultGrace = time.Hour

// Retention is the lifecycle section: which versions `modelreg serve`
// deletes on its own (rules), how often (interval), and how young a blob
// is kept by the collector whatever refers to it (grace). Rules never
// delete a version a stage points at, one that ever entered a stage, or a
// lineage ancestor of a version kept (docs/lifecycle.md).
type Retention struct {
	// Interval runs the rules and a blob collection that often; zero runs
	// them only when asked (`modelreg gc`).
	Interval Duration `yaml:"interval"`
	// Grace keeps blobs written less than this long ago (DefaultGrace when
	// zero): their manifest may still be on its way.
	Grace Duration `yaml:"grace"`
	// Rules are tried in order; the first whose pattern matches a
	// repository decides for it. A repository no rule matches keeps every
	// version.
	Rules []Rule `yaml:"rules"`
}

// Rule keeps, in the repositories its pattern matches, the newest
// KeepNewest versions and every version younger than KeepYoungerThan; the
// others may be deleted (with a signed tombstone).
type Rule struct {
	// Repositories is a pattern: team/* is one path segment, team/** any
	// depth, ** every repository.
	Repositories string `yaml:"repositories"`
	// KeepNewest keeps this many versions, newest pushed first.
	KeepNewest int `yaml:"keepNewest"`
	// KeepYoungerThan keeps versions pushed less than this long ago
	// ("30d", "12h").
	KeepYoungerThan Duration `yaml:"keepYoungerThan"`
}

// String names the rule in tombstones and reports:
// "team/** keep newest 5, younger than 30d".
func (r Rule) String() string {
	var keep []string
	if r.KeepNewest > 0 {
		keep = append(keep, fmt.Sprintf("newest %d", r.KeepNewest))
	}
	if r.KeepYoungerThan > 0 {
		keep = append(keep, "younger than "+r.KeepYoungerThan.String())
	}
	return r.Repositories + " keep " + strings.Join(keep, ", ")
}

// Match returns the first rule whose pattern matches repo, or nil.
func (r Retention) Match(repo string) *Rule {
	for i := range r.Rules {
		if ok, _ := doublestar.Match(r.Rules[i].Repositories, repo); ok {
			return &r.Rules[i]
		}
	}
	return nil
}

// GraceOrDefault is Grace, or DefaultGrace when unset.
func (r Retention) GraceOrDefault() time.Duration {
	if r.Grace <= 0 {
		return DefaultGrace
	}
	return time.Duration(r.Grace)
}

func (r *Retention) check() error {
	if r.Interval < 0 || r.Grace < 0 {
		return errors.New("retention: interval and grace must be positive durations")
	}
	if r.Interval > 0 && r.Interval < Duration(time.Minute) {
		return fmt.Errorf("retention: interval %s is shorter than a minute; a collection reads every manifest, so run it hourly or daily", r.Interval)
	}
	for i, rule := range r.Rules {
		where := fmt.Sprintf("retention.rules[%d]", i)
		if rule.Repositories == "" {
			return fmt.Errorf("%s: repositories is required (team/* one segment, team/** any depth, ** every repository)", where)
		}
		if !doublestar.ValidatePattern(rule.Repositories) {
			return fmt.Errorf("%s: invalid repository pattern %q (team/* is one path segment, team/** any depth)", where, rule.Repositories)
		}
		if rule.KeepNewest < 0 || rule.KeepYoungerThan < 0 {
			return fmt.Errorf("%s (%s): keepNewest and keepYoungerThan must be positive", where, rule.Repositories)
		}
		if rule.KeepNewest == 0 && rule.KeepYoungerThan == 0 {
			return fmt.Errorf("%s (%s): a rule must keep something: set keepNewest (e.g. 5), keepYoungerThan (e.g. 30d) or both; a rule keeping nothing would delete every version that never entered a stage", where, rule.Repositories)
		}
	}
	return nil
}

// Duration is a time.Duration written as Go writes one ("90m", "1h30m")
// or in days ("30d"), the unit retention is thought in.
type Duration time.Duration

// ParseDuration reads "30d", "12h", "1h30m".
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("duration %q: expected a whole number of days, like 30d", s)
		}
		return Duration(time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: expected e.g. 30d, 12h or 90m", s)
	}
	return Duration(d), nil
}

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// String writes whole days as "30d", anything else as Go does.
func (d Duration) String() string {
	td := time.Duration(d)
	if td > 0 && td%(24*time.Hour) == 0 {
		return strconv.Itoa(int(td/(24*time.Hour))) + "d"
	}
	return td.String()
}
