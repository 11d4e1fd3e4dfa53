// Package access is modelreg serve's access policy: who (users, groups,
// robot accounts, anonymous clients) may do what (pull, push, sign,
// delete, move a stage, administer) to which repositories. Everything not
// granted is denied. The evaluator is small, pure and fuzzed rather than
// a general engine (casbin): the model has one shape (subject, repository
// pattern, action), and a policy an operator can read in one screen is
// part of its security.
package access

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"go.yaml.in/yaml/v3"
)

// Action is a right on a repository.
type Action string

// The actions. A stage right is Promote(stage); "promote:*" grants every
// stage.
const (
	// Pull reads: manifests, blobs, tags, referrers, the model API and
	// the web UI's pages of the repository.
	Pull Action = "pull"
	// Push writes versions and other manifests without a subject, blobs,
	// and tags no stage rule protects (latest, dev).
	Push Action = "push"
	// Sign attaches referrers to versions: signatures, attestations,
	// evaluations, lineage (manifests with a subject, cosign's
	// sha256-….sig and .att tags) and the blobs they need. An approver
	// can sign without being able to push.
	Sign Action = "sign"
	// Delete deletes versions (recorded by tombstones).
	Delete Action = "delete"
	// Admin is every right, and the registry's own operations: takedown,
	// garbage collection, robot accounts, redelivery of events.
	Admin Action = "admin"
)

// Promote is the right to move stage (promotion, rollback, removal).
func Promote(stage string) Action { return Action("promote:" + stage) }

// Kind of subject.
const (
	KindUser      = "user"
	KindRobot     = "robot"
	KindAnonymous = "anonymous"
)

// Subject is who makes a request.
type Subject struct {
	Kind string
	// Name is the user or robot name ("" for anonymous).
	Name string
	// Groups are the groups the identity provider (OIDC) says the user is
	// in, beside those the policy lists.
	Groups []string
}

// Anonymous is a request without credentials.
var Anonymous = Subject{Kind: KindAnonymous}

func (s Subject) String() string {
	if s.Kind == KindAnonymous {
		return "anonymous"
	}
	return s.Kind + ":" + s.Name
}

// Policy is a parsed access policy.
type Policy struct {
	// Source and Digest identify the file (sha256 of its bytes), so
	// replicas can tell they enforce the same one.
	Source, Digest string
	// Groups maps a group to its members ("alice", or "robot:ci").
	Groups map[string][]string `yaml:"groups"`
	// Protect lists stages that need a promote right to move beyond those
	// the rules name; the trust policy's stages are protected too.
	Protect []string `yaml:"protect"`
	Rules   []Rule   `yaml:"rules"`
}

// Rule grants Actions on Repositories to Subjects.
type Rule struct {
	// Subjects: "user:NAME", "group:NAME", "robot:NAME", "anonymous",
	// "authenticated" (any user or robot), "*" (anyone, anonymous included).
	Subjects []string `yaml:"subjects"`
	// Repositories are patterns: team/* one path segment, team/** any
	// depth, ** every repository.
	Repositories []string `yaml:"repositories"`
	Actions      []Action `yaml:"actions"`
}

// Parse reads a policy; unknown keys, unknown actions, unknown subject
// kinds and invalid patterns are errors naming the rule.
func Parse(b []byte, source string) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("access policy %s: %w", source, err)
	}
	sum := sha256.Sum256(b)
	p.Source, p.Digest = source, "sha256:"+hex.EncodeToString(sum[:])
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("access policy %s: %w", source, err)
	}
	return &p, nil
}

// Load reads a policy file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the access policy: %w", err)
	}
	return Parse(b, path)
}

func (p *Policy) check() error {
	for g, members := range p.Groups {
		if g == "" || strings.ContainsAny(g, ": ") {
			return fmt.Errorf("group %q: a group name has no ':' or spaces", g)
		}
		for _, m := range members {
			if m == "" {
				return fmt.Errorf("group %q has an empty member", g)
			}
		}
	}
	for _, s := range p.Protect {
		if !validStage(s) {
			return fmt.Errorf("protect: %q is not a stage name (lower-case letters, digits and '-', starting with a letter)", s)
		}
	}
	if len(p.Rules) == 0 {
		return errors.New("no rules: everything would be denied; add at least one rule (docs/access.md)")
	}
	for i, r := range p.Rules {
		where := fmt.Sprintf("rules[%d]", i)
		if len(r.Subjects) == 0 || len(r.Repositories) == 0 || len(r.Actions) == 0 {
			return fmt.Errorf("%s: a rule needs subjects, repositories and actions", where)
		}
		for _, s := range r.Subjects {
			if err := checkSubject(s); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		if err := (Grant{r.Repositories, r.Actions}).Check(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

func checkSubject(s string) error {
	switch s {
	case "anonymous", "authenticated", "*":
		return nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return fmt.Errorf("subject %q: expected user:NAME, group:NAME, robot:NAME, anonymous, authenticated or *", s)
	}
	switch kind {
	case KindUser, KindRobot:
		return nil
	case "group":
		// A group from the identity provider (OIDC) need not be listed
		// under groups:.
		return nil
	}
	return fmt.Errorf("subject %q: unknown kind %q (user, group, robot)", s, kind)
}

func validStage(s string) bool {
	if s == "" || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func validAction(a Action) bool {
	switch a {
	case Pull, Push, Sign, Delete, Admin, "promote:*":
		return true
	}
	st, ok := strings.CutPrefix(string(a), "promote:")
	return ok && validStage(st)
}

// matches reports whether the rule's subjects include s.
func (p *Policy) matches(r Rule, s Subject) bool {
	for _, want := range r.Subjects {
		switch want {
		case "*":
			return true
		case "anonymous":
			if s.Kind == KindAnonymous {
				return true
			}
			continue
		case "authenticated":
			if s.Kind != KindAnonymous {
				return true
			}
			continue
		}
		if s.Kind == KindAnonymous {
			continue
		}
		kind, name, _ := strings.Cut(want, ":")
		switch kind {
		case s.Kind:
			if name == s.Name {
				return true
			}
		case "group":
			if slices.Contains(s.Groups, name) || slices.Contains(p.Groups[name], s.Member()) {
				return true
			}
		}
	}
	return false
}

// Member is how a group lists s: users by name, robots as robot:NAME.
func (s Subject) Member() string {
	if s.Kind == KindRobot {
		return "robot:" + s.Name
	}
	return s.Name
}

func matchRepo(patterns []string, repo string) bool {
	for _, pat := range patterns {
		if ok, _ := doublestar.Match(pat, repo); ok {
			return true
		}
	}
	return false
}

// grants reports whether a granted action covers the wanted one: admin
// covers all; every write covers pull (a pusher checks what exists);
// promote:* covers every stage.
func grants(have, want Action) bool {
	switch {
	case have == want, have == Admin:
		return true
	case want == Pull:
		return true // every action on a repository includes reading it
	case have == "promote:*":
		return strings.HasPrefix(string(want), "promote:")
	}
	return false
}

// Allowed reports whether s may do a on repo.
func (p *Policy) Allowed(s Subject, repo string, a Action) bool {
	for _, r := range p.Rules {
		if p.matches(r, s) && (Grant{r.Repositories, r.Actions}).Allows(repo, a) {
			return true
		}
	}
	return false
}

// Grant is a set of rights on repository patterns: a robot account's
// (given when it is created), or a rule's.
type Grant struct {
	Repositories []string `json:"repositories"`
	Actions      []Action `json:"actions"`
}

// Allows reports whether the grant covers a on repo.
func (g Grant) Allows(repo string, a Action) bool {
	if !matchRepo(g.Repositories, repo) {
		return false
	}
	for _, have := range g.Actions {
		if grants(have, a) {
			return true
		}
	}
	return false
}

// MayWrite reports whether the grant has a write right on repo.
func (g Grant) MayWrite(repo string) bool {
	return matchRepo(g.Repositories, repo) && slices.ContainsFunc(g.Actions, func(a Action) bool { return a != Pull })
}

// Check validates a grant as a rule's repositories and actions.
func (g Grant) Check() error {
	if len(g.Repositories) == 0 || len(g.Actions) == 0 {
		return errors.New("a grant needs repository patterns and actions")
	}
	for _, pat := range g.Repositories {
		if !doublestar.ValidatePattern(pat) || strings.HasPrefix(pat, "/") {
			return fmt.Errorf("invalid repository pattern %q (team/* is one path segment, team/** any depth)", pat)
		}
	}
	for _, a := range g.Actions {
		if !validAction(a) {
			return fmt.Errorf("unknown action %q; actions are pull, push, sign, delete, promote:STAGE, promote:* and admin", a)
		}
	}
	return nil
}

// MayWrite reports whether s has any write right on repo: what a token's
// push scope stands for (standard clients ask only pull and push; the
// server decides the finer right on each request).
func (p *Policy) MayWrite(s Subject, repo string) bool {
	for _, r := range p.Rules {
		if p.matches(r, s) && (Grant{r.Repositories, r.Actions}).MayWrite(repo) {
			return true
		}
	}
	return false
}

// Protected reports whether moving stage needs a promote right: the
// policy protects it, or a rule names it.
func (p *Policy) Protected(stage string) bool {
	if slices.Contains(p.Protect, stage) {
		return true
	}
	for _, r := range p.Rules {
		if slices.Contains(r.Actions, Promote(stage)) {
			return true
		}
	}
	return false
}
