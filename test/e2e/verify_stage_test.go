package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// `verify --stage` with a stage the policy does not protect is an error
// naming the protected stages (with a suggestion for a typo), before any
// request; --allow-unprotected accepts it.
func TestVerifyStage(t *testing.T) {
	e := newEnv(t)
	e.ok("keygen", "--output-key-prefix", "alice")
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), `version: 1
keys:
  alice: alice.pub
stages:
  staging:
    signatures: {keys: [alice], threshold: 1}
  production:
    signatures: {keys: [alice], threshold: 1}
`, 0o644)
	reg := startServer(t)
	ref := reg.Addr + "/team/verify:1.0.0"
	pushVersion(t, e, ref, "weights")
	e.ok("sign", ref, "--key", "alice.key")

	// The typo of the finding: refused, exit 2, with the way out.
	r := e.fails([]string{`--stage "prodution"`, "does not protect this stage", "it protects production, staging", `did you mean "production"?`, "--allow-unprotected"},
		"verify", ref, "--stage", "prodution", "--policy", "policy.yaml")
	if r.Code != 2 || r.Stdout != "" {
		t.Errorf("typo: exit %d, stdout %q; want 2 and nothing", r.Code, r.Stdout)
	}
	e.fails([]string{`did you mean "staging"?`}, "verify", ref, "--stage", "stagnig", "--policy", "policy.yaml", "--output", "json")
	// Nothing close: no suggestion.
	r = e.fails([]string{`--stage "qa"`, "it protects production, staging"}, "verify", ref, "--stage", "qa", "--policy", "policy.yaml")
	if strings.Contains(r.Stderr, "did you mean") {
		t.Errorf("suggestion for a stage nothing resembles: %s", r.Stderr)
	}
	// Checked before any request: an unreachable registry does not matter.
	e.fails([]string{"does not protect this stage"}, "verify", "127.0.0.1:1/team/verify:1.0.0", "--stage", "prodution", "--policy", "policy.yaml")

	// --allow-unprotected: reported as not protected, exit 0.
	out := e.ok("verify", ref, "--stage", "prodution", "--policy", "policy.yaml", "--allow-unprotected").Stdout
	if !strings.Contains(out, "stage prodution: not protected by the policy") {
		t.Errorf("--allow-unprotected output:\n%s", out)
	}
	// Protected stages behave as before.
	e.ok("verify", ref, "--stage", "production", "--policy", "policy.yaml")
	e.ok("verify", ref, "--policy", "policy.yaml")
}
