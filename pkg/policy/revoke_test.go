package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/signature"
)

// A revoked key's valid signatures do not count from the revocation time
// on, whatever time they claim; the refusal names the revocation; the
// short and long key forms mix; a head resting on the key is flagged.
func TestRevokedKeyDoesNotCount(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeys(t, dir, "a", "b", "c")
	doc := `version: 1
keys:
  a: {path: a.pub, revoked: 2026-11-01T00:00:00Z, reason: laptop stolen}
  b: b.pub
  c: {path: c.pub}
stages:
  production:
    signatures: {keys: [a, b, c], threshold: 2}
`
	p, err := Parse([]byte(doc), dir)
	if err != nil {
		t.Fatal(err)
	}
	valid := func(n string) signature.Found {
		return signature.Found{Form: signature.FormBundle, Key: keys[n].Fingerprint, Valid: true}
	}
	ev := Evidence{Signatures: []signature.Found{valid("a"), valid("b")}}
	before := time.Date(2026, 10, 31, 0, 0, 0, 0, time.UTC)
	after := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

	if d := p.EvaluateAt("production", ev, before); !d.Allowed || len(d.Approvers) != 2 || len(d.Revoked) != 0 {
		t.Fatalf("before the revocation: %+v", d)
	}
	d := p.EvaluateAt("production", ev, after)
	if d.Allowed || len(d.Approvers) != 1 || len(d.Revoked) != 1 || d.Revoked[0].Name != "a" {
		t.Fatalf("after the revocation: %+v", d)
	}
	msg := d.Err().Error()
	for _, want := range []string{"1 of 2 required", "(revoked: a)", "1 more needed from c", "key a (" + keys["a"].Fingerprint + ") is revoked by the policy since 2026-11-01T00:00:00Z (laptop stolen)", "whatever time they claim"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q lacks %q", msg, want)
		}
	}
	if d := p.EvaluateAt("production", Evidence{Signatures: []signature.Found{valid("a"), valid("b"), valid("c")}}, after); !d.Allowed {
		t.Errorf("b and c still approve: %+v", d)
	}

	// A head approved by a and b rests on a: flagged, unsatisfied.
	h := Head{Stage: "production", RecordKeys: []string{keys["a"].Fingerprint, keys["b"].Fingerprint}}
	p.CheckHead(&h, d, after)
	if !h.Flagged || h.Satisfied || len(h.RevokedKeys) != 1 || !strings.Contains(h.Why, "no longer meets") {
		t.Errorf("head after the revocation: %+v", h)
	}
	// Before the revocation is in force nothing is flagged.
	h = Head{Stage: "production", RecordKeys: []string{keys["a"].Fingerprint, keys["b"].Fingerprint}}
	p.CheckHead(&h, p.EvaluateAt("production", ev, before), before)
	if h.Flagged {
		t.Errorf("head before the revocation: %+v", h)
	}
	// Approved by a, b and c: still flagged (the record names a), yet satisfied.
	all := Evidence{Signatures: []signature.Found{valid("a"), valid("b"), valid("c")}}
	h = Head{Stage: "production", RecordKeys: []string{keys["a"].Fingerprint, keys["b"].Fingerprint}}
	p.CheckHead(&h, p.EvaluateAt("production", all, after), after)
	if !h.Flagged || !h.Satisfied || !strings.Contains(h.Why, "still meets") {
		t.Errorf("head still satisfied: %+v", h)
	}

	// Revoking two of three leaves too few keys for a threshold of 2.
	p2, err := Parse([]byte(strings.Replace(doc, "b: b.pub", "b: {path: b.pub, revoked: 2026-01-01T00:00:00Z}", 1)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if msg := p2.EvaluateAt("production", ev, after).Err().Error(); !strings.Contains(msg, "only 1 unrevoked key(s) remain (c)") {
		t.Errorf("too few keys left: %s", msg)
	}
	if got := p2.RevokedKeys(); len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Errorf("RevokedKeys: %+v", got)
	}
}

func TestRevokedSyntaxErrors(t *testing.T) {
	dir := t.TempDir()
	writeKeys(t, dir, "a")
	for doc, want := range map[string]string{
		"version: 1\nkeys:\n  a: {path: a.pub, revoked: 2026-11-01}\n":                   `line 3: key "a": revoked: "2026-11-01" is not an RFC 3339 time`,
		"version: 1\nkeys:\n  a: {path: a.pub, revokd: 2026-11-01T00:00:00Z}\n":          `unknown field "revokd"`,
		"version: 1\nkeys:\n  a: {revoked: 2026-11-01T00:00:00Z}\n":                      "path (a .pub file) or pem (the key inline) is required",
		"version: 1\nkeys:\n  a: {path: a.pub, pem: x, revoked: 2026-11-01T00:00:00Z}\n": "give path or pem, not both",
	} {
		if _, err := Parse([]byte(doc), dir); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", doc, err, want)
		}
	}
}
