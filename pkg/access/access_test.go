package access

import (
	"strings"
	"testing"
)

const example = `
groups:
  ml-team: [alice, bob, "robot:ci"]
  release: [rita]
protect: [staging]
rules:
  - subjects: [group:ml-team]
    repositories: ["team/*"]
    actions: [push, sign]
  - subjects: [user:rita]
    repositories: ["team/**"]
    actions: ["promote:production", "promote:staging"]
  - subjects: [user:quinn]
    repositories: ["team/*"]
    actions: ["promote:staging"]
  - subjects: [group:oidc-approvers]
    repositories: ["team/*"]
    actions: [sign]
  - subjects: [anonymous]
    repositories: ["public/**"]
    actions: [pull]
  - subjects: [user:root]
    repositories: ["**"]
    actions: [admin]
  - subjects: [authenticated]
    repositories: ["shared/*"]
    actions: [pull]
`

func TestAllowed(t *testing.T) {
	p, err := Parse([]byte(example), "example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	user := func(n string, groups ...string) Subject { return Subject{Kind: KindUser, Name: n, Groups: groups} }
	robot := Subject{Kind: KindRobot, Name: "ci"}
	for _, c := range []struct {
		s    Subject
		repo string
		a    Action
		want bool
	}{
		{user("alice"), "team/a", Push, true},
		{user("alice"), "team/a", Pull, true}, // every write includes reading
		{user("alice"), "team/a", Sign, true},
		{user("alice"), "team/a/deep", Push, false}, // team/* is one segment
		{user("alice"), "other/b", Push, false},
		{user("alice"), "other/b", Pull, false}, // default deny
		{user("alice"), "team/a", Delete, false},
		{user("alice"), "team/a", Promote("staging"), false},
		{robot, "team/a", Push, true},                                // a robot in a group, as robot:NAME
		{Subject{Kind: KindUser, Name: "ci"}, "team/a", Push, false}, // a user named like the robot is not it
		{user("rita"), "team/a/deep", Promote("production"), true},
		{user("rita"), "team/a", Push, false},
		{user("quinn"), "team/a", Promote("staging"), true},
		{user("quinn"), "team/a", Promote("production"), false},
		{user("zed", "oidc-approvers"), "team/a", Sign, true}, // a group from the identity provider
		{user("zed", "oidc-approvers"), "team/a", Push, false},
		{Anonymous, "public/x/y", Pull, true},
		{Anonymous, "public/x/y", Push, false},
		{Anonymous, "shared/x", Pull, false}, // authenticated excludes anonymous
		{user("zed"), "shared/x", Pull, true},
		{user("root"), "any/thing/deep", Promote("production"), true},
		{user("root"), "x", Admin, true},
		{user("rita"), "team/a", Admin, false},
	} {
		if got := p.Allowed(c.s, c.repo, c.a); got != c.want {
			t.Errorf("%s %s %s: %v, want %v", c.s, c.a, c.repo, got, c.want)
		}
	}
	if !p.MayWrite(user("quinn"), "team/a") || p.MayWrite(user("zed"), "shared/x") || p.MayWrite(Anonymous, "public/x") {
		t.Error("MayWrite: any write right, and only that, grants a push scope")
	}
	for st, want := range map[string]bool{"staging": true, "production": true, "latest": false, "dev": false} {
		if p.Protected(st) != want {
			t.Errorf("Protected(%s) = %v", st, !want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"rules: []\n", "no rules"},
		{"rule:\n  - x\n", "field rule not found"},
		{"rules:\n  - subjects: [alice]\n    repositories: ['**']\n    actions: [pull]\n", `subject "alice"`},
		{"rules:\n  - subjects: [team:x]\n    repositories: ['**']\n    actions: [pull]\n", `unknown kind "team"`},
		{"rules:\n  - subjects: [user:a]\n    repositories: ['**']\n    actions: [write]\n", `unknown action "write"`},
		{"rules:\n  - subjects: [user:a]\n    repositories: ['**']\n    actions: ['promote:Prod']\n", `unknown action "promote:Prod"`},
		{"rules:\n  - subjects: [user:a]\n    repositories: ['team/[']\n    actions: [pull]\n", "invalid repository pattern"},
		{"rules:\n  - subjects: [user:a]\n    actions: [pull]\n", "needs subjects, repositories and actions"},
		{"protect: [Prod]\nrules:\n  - subjects: [user:a]\n    repositories: ['**']\n    actions: [pull]\n", "not a stage name"},
	} {
		_, err := Parse([]byte(c.yaml), "p.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.yaml, err, c.want)
		}
	}
}

// FuzzAllowed: whatever the policy and the request, the evaluator never
// panics, denies by default, and keeps its implications: admin grants
// everything, any right grants pull, and a right the policy does not
// name anywhere is never granted.
func FuzzAllowed(f *testing.F) {
	f.Add(example, "user", "alice", "team/a", "push")
	f.Add("rules:\n  - subjects: ['*']\n    repositories: ['**']\n    actions: [pull]\n", "anonymous", "", "x/y", "push")
	f.Add("rules:\n  - subjects: [group:g]\n    repositories: ['a/**']\n    actions: ['promote:*']\n", "user", "u", "a/b", "promote:production")
	f.Fuzz(func(t *testing.T, policy, kind, name, repo, action string) {
		p, err := Parse([]byte(policy), "fuzz.yaml")
		if err != nil {
			return
		}
		s := Subject{Kind: kind, Name: name}
		if kind != KindUser && kind != KindRobot {
			s = Anonymous
		}
		a := Action(action)
		got := p.Allowed(s, repo, a)
		if p.Allowed(s, repo, Admin) && validAction(a) && !got {
			t.Fatalf("admin on %s but not %s", repo, a)
		}
		if got && !p.Allowed(s, repo, Pull) {
			t.Fatalf("%s on %s without pull", a, repo)
		}
		if got && a != Pull {
			named := false
			for _, r := range p.Rules {
				for _, have := range r.Actions {
					if have == a || have == Admin || have == "promote:*" && strings.HasPrefix(action, "promote:") {
						named = true
					}
				}
			}
			if !named {
				t.Fatalf("%s granted though no rule names it or admin", a)
			}
		}
		if got && !matchAnyRepo(p, repo) {
			t.Fatalf("%s granted on %s, which no rule's patterns match", a, repo)
		}
	})
}

func matchAnyRepo(p *Policy, repo string) bool {
	for _, r := range p.Rules {
		if matchRepo(r.Repositories, repo) {
			return true
		}
	}
	return false
}
