// Package tag classifies tags of a model repository. The rule is syntactic so
// that every client, with or without the modelreg server, agrees on which tag
// is an immutable version and which is a stage that only a promotion moves.
package tag

import (
	"fmt"
	"regexp"
	"strings"
)

// Kind is what a tag means in a model repository.
type Kind int

const (
	// Other is any tag that is neither a version nor a stage: cosign's
	// sha256-<hex>.sig tags, referrers fallback tags, upper-case tags.
	Other Kind = iota
	// Version is an immutable version tag: it starts with a digit, or with
	// "v" followed by a digit ("1.4.0", "v12", "2024-05-01").
	Version
	// Stage is a movable stage or alias: lower-case letters, digits and "-",
	// starting with a letter ("staging", "production", "canary").
	Stage
)

func (k Kind) String() string {
	switch k {
	case Version:
		return "version"
	case Stage:
		return "stage"
	}
	return "other"
}

var (
	ociTag   = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	version  = regexp.MustCompile(`^v?[0-9][a-zA-Z0-9._-]*$`)
	stage    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	sigOrRef = regexp.MustCompile(`^sha(256|512)-[0-9a-f]+(\.[a-z]+)?$`)
)

// Classify tells what a tag is.
func Classify(t string) Kind {
	switch {
	case !ociTag.MatchString(t) || sigOrRef.MatchString(t):
		return Other
	case version.MatchString(t):
		return Version
	case stage.MatchString(t):
		return Stage
	}
	return Other
}

// ValidateVersion returns an error that explains the rule when t cannot be
// used as a version tag.
func ValidateVersion(t string) error {
	switch Classify(t) {
	case Version:
		return nil
	case Stage:
		return fmt.Errorf("%q is a stage name, not a version: versions start with a digit or with v and a digit (1.4.0, v12); a stage is set with `modelreg promote`", t)
	}
	if strings.TrimSpace(t) == "" {
		return fmt.Errorf("a version tag is required: add :VERSION to the reference, e.g. localhost:5000/team/model:1.0.0")
	}
	return fmt.Errorf("%q is not a valid version tag: versions start with a digit or with v and a digit, then letters, digits, '.', '_' or '-' (at most 128 characters)", t)
}

// ValidateStage returns an error that explains the rule when s cannot be used
// as a stage name.
func ValidateStage(s string) error {
	if Classify(s) == Stage {
		return nil
	}
	return fmt.Errorf("%q is not a valid stage name: a stage is lower-case letters, digits and '-', starting with a letter (staging, production, canary)", s)
}
