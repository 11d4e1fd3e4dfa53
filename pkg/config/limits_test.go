package config

import (
	"strings"
	"testing"
)

func TestLimits(t *testing.T) {
	c, err := Parse([]byte(`
limits:
  maxAnnotationBytes: 16KiB
  quotas:
    - repositories: ["team/big"]
      bytes: 50GiB
    - repositories: ["team/*", "ci/**"]
      bytes: 1048576
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.Referrers() != DefaultMaxReferrersPerSubject || l.AnnotationBytes() != 16<<10 {
		t.Errorf("caps: %d %d", l.Referrers(), l.AnnotationBytes())
	}
	for repo, want := range map[string]int64{"team/big": 50 << 30, "team/a": 1 << 20, "ci/x/y": 1 << 20, "other/a": 0, "team/a/b": 0} {
		if got, _, _ := l.Quota(repo); got != want {
			t.Errorf("Quota(%s) = %d, want %d", repo, got, want)
		}
	}
	if Size(50<<30).String() != "50GiB" || Size(1000).String() != "1000B" {
		t.Errorf("String: %s %s", Size(50<<30), Size(1000))
	}
	for doc, want := range map[string]string{
		"limits:\n  quotas:\n    - repositories: [a]\n":                   "limits.quotas[0]: bytes is required",
		"limits:\n  quotas:\n    - bytes: 1GiB\n":                         "repositories is empty",
		"limits:\n  quotas:\n    - repositories: [a]\n      bytes: 1GB\n": `"1GB" is not a size`,
		"limits:\n  maxReferrersPerSubject: -1\n":                         "is negative",
		"limits:\n  maxreferrers: 5\n":                                    "field maxreferrers not found",
	} {
		if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", doc, err, want)
		}
	}
}
