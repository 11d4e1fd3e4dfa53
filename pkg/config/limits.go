package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"go.yaml.in/yaml/v3"
)

// Defaults of the limits a configuration does not set.
const (
	// DefaultMaxReferrersPerSubject bounds the referrers (signatures,
	// records, attestations) of one manifest: every promotion lists them
	// under the stage's lock, so junk referrers would slow every
	// promotion of that version.
	DefaultMaxReferrersPerSubject = 1000
	// DefaultMaxAnnotationBytes bounds a manifest's own annotations (keys
	// plus values): the index and every Referrers API answer carry them.
	DefaultMaxAnnotationBytes = 64 << 10
)

// Limits bound what push rights can cost the registry (docs/server.md,
// "Limits"): storage per repository, referrers per subject, annotation
// bytes per manifest. Zero values take the defaults; quotas apply only
// where a rule matches.
type Limits struct {
	// Quotas cap the storage of repositories; the first rule whose
	// pattern matches a repository applies to it (each repository has
	// its own quota; the rule does not pool them).
	Quotas []Quota `yaml:"quotas"`
	// MaxReferrersPerSubject caps the manifests whose subject is one
	// digest, in one repository (default 1000).
	MaxReferrersPerSubject int `yaml:"maxReferrersPerSubject"`
	// MaxAnnotationBytes caps the bytes of a manifest's own annotations,
	// keys and values (default 64 KiB).
	MaxAnnotationBytes Size `yaml:"maxAnnotationBytes"`
}

// Quota is a storage quota for the repositories a pattern matches.
type Quota struct {
	// Repositories are repository patterns (team/* one segment, team/**
	// any depth).
	Repositories []string `yaml:"repositories"`
	// Bytes is each matching repository's quota: bytes, or a number with
	// KiB, MiB, GiB or TiB.
	Bytes Size `yaml:"bytes"`
}

// Size is a number of bytes, written as an integer or with a unit (KiB,
// MiB, GiB, TiB), so a quota of 50 GiB need not be typed in bytes.
type Size int64

// UnmarshalYAML reads 1048576, 1MiB or "64 KiB".
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = Size(v)
	return nil
}

// String writes the size with the largest unit that divides it.
func (s Size) String() string {
	for _, u := range units {
		if s >= Size(u.n) && int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

var units = []struct {
	name string
	n    int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// ParseSize reads bytes, or a whole number with KiB, MiB, GiB or TiB.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.name) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.name)), u.n
			break
		}
	}
	t = strings.TrimSuffix(t, "B")
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size: give bytes, or a whole number with KiB, MiB, GiB or TiB (50GiB)", v)
	}
	return n * mult, nil
}

// Quota returns the quota of repo, the index of the rule that set it (for
// messages) and whether one applies.
func (l Limits) Quota(repo string) (int64, int, bool) {
	for i, q := range l.Quotas {
		for _, p := range q.Repositories {
			if ok, _ := doublestar.Match(p, repo); ok {
				return int64(q.Bytes), i, true
			}
		}
	}
	return 0, -1, false
}

// Referrers is the cap on referrers per subject in force.
func (l Limits) Referrers() int {
	if l.MaxReferrersPerSubject == 0 {
		return DefaultMaxReferrersPerSubject
	}
	return l.MaxReferrersPerSubject
}

// AnnotationBytes is the cap on a manifest's annotation bytes in force.
func (l Limits) AnnotationBytes() int64 {
	if l.MaxAnnotationBytes == 0 {
		return DefaultMaxAnnotationBytes
	}
	return int64(l.MaxAnnotationBytes)
}

func (l *Limits) check() error {
	if l.MaxReferrersPerSubject < 0 {
		return fmt.Errorf("limits.maxReferrersPerSubject: %d is negative; give a positive number (0 or absent: %d)", l.MaxReferrersPerSubject, DefaultMaxReferrersPerSubject)
	}
	for i, q := range l.Quotas {
		where := fmt.Sprintf("limits.quotas[%d]", i)
		if len(q.Repositories) == 0 {
			return fmt.Errorf("%s: repositories is empty; name the repositories it limits (team/*, team/**, or ** for all)", where)
		}
		for _, p := range q.Repositories {
			if !doublestar.ValidatePattern(p) {
				return fmt.Errorf("%s: invalid repository pattern %q (team/* is one path segment, team/** any depth)", where, p)
			}
		}
		if q.Bytes <= 0 {
			return fmt.Errorf("%s: bytes is required and must be positive (e.g. bytes: 50GiB)", where)
		}
	}
	return nil
}
