package policy

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/signature"
)

func writeKeys(t *testing.T, dir string, names ...string) map[string]key.Public {
	t.Helper()
	out := map[string]key.Public{}
	for _, n := range names {
		_, pub, err := key.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n+".pub"), pub, 0o644); err != nil {
			t.Fatal(err)
		}
		out[n], _ = key.ParsePublic(pub)
	}
	return out
}

func TestParseErrorsNameTheLine(t *testing.T) {
	dir := t.TempDir()
	writeKeys(t, dir, "a", "b")
	for doc, want := range map[string]string{
		"version: 2\n":                       "version: 1 is required",
		"version: 1\nkeys:\n  a: nope.pub\n": "line 3: key \"a\"",
		"version: 1\nkeys:\n  a: a.pub\nstages:\n  Prod:\n    signatures: {keys: [a], threshold: 1}\n": "line 6: \"Prod\" is not a valid stage name",
		"version: 1\nkeys:\n  a: a.pub\nstages:\n  prod:\n    signatures: {keys: [a], threshold: 2}\n": "line 6: stage \"prod\": threshold 2",
		"version: 1\nkeys:\n  a: a.pub\nstages:\n  prod:\n    signatures: {keys: [z], threshold: 1}\n": "line 6: stage \"prod\" names key \"z\"",
		"version: 1\nkeys:\n  a: a.pub\nstages:\n  prod: {}\n":                                         "has no requirement",
		"version: 1\nkyes: {}\n": "line 2: field kyes not found",
	} {
		_, err := Parse([]byte(doc), dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", doc, err, want)
		}
	}
}

func TestEvaluateThreshold(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeys(t, dir, "a", "b", "c", "x")
	p, err := Parse([]byte("version: 1\nkeys:\n  a: a.pub\n  b: b.pub\n  c: c.pub\n  x: x.pub\nstages:\n  production:\n    signatures: {keys: [a, b, c], threshold: 2}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	valid := func(n string) signature.Found {
		return signature.Found{Form: signature.FormBundle, Key: keys[n].Fingerprint, Valid: true}
	}
	if d := p.Evaluate("staging", Evidence{Signatures: nil}); !d.Allowed || d.Protected {
		t.Errorf("unnamed stage must be unprotected: %+v", d)
	}
	if d := p.Evaluate("production", Evidence{Signatures: []signature.Found{valid("a"), valid("a")}}); d.Allowed {
		t.Errorf("two signatures by one key count once: %+v", d)
	}
	d := p.Evaluate("production", Evidence{Signatures: []signature.Found{valid("a"), valid("x")}})
	if d.Allowed || !strings.Contains(d.Err().Error(), "1 of 2") || !strings.Contains(d.Err().Error(), "may not approve production") {
		t.Errorf("x may not approve production: %v", d.Err())
	}
	d = p.Evaluate("production", Evidence{Signatures: []signature.Found{valid("c"), valid("a")}})
	if !d.Allowed || len(d.Approvers) != 2 || d.Approvers[0].Name != "a" || d.Approvers[1].Name != "c" {
		t.Errorf("a and c: %+v", d)
	}
}

// registries: takes the ed25519 key a modelreg serve publishes and refuses
// a cosign key, which belongs under keys:.
func TestRegistryKeys(t *testing.T) {
	dir := t.TempDir()
	writeKeys(t, dir, "alice")
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	if err := os.WriteFile(filepath.Join(dir, "dev.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Parse([]byte("version: 1\nregistries:\n  dev: dev.pub\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	fp, _ := key.FingerprintOf(pub)
	if rk := p.RegistryKeys()["dev"]; !rk.Key.Equal(pub) || rk.Fingerprint != fp {
		t.Errorf("registries: dev = %+v", rk)
	}
	if _, err := Parse([]byte("version: 1\nregistries:\n  dev: alice.pub\n"), dir); err == nil || !strings.Contains(err.Error(), "line 3: registry \"dev\"") || !strings.Contains(err.Error(), "keys:") {
		t.Errorf("a cosign key under registries: %v", err)
	}
	if (*Policy)(nil).RegistryKeys() != nil {
		t.Errorf("a nil policy lists registry keys")
	}
}
