package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	t.Setenv("HOOK_SECRET", "from-the-environment-0123")
	c, err := Parse([]byte(`
events:
  source: https://registry.example.com
  subscriptions:
    - name: deploy
      url: https://deploy.example.com/hook
      types: [stage.moved, dev.modelreg.version.deleted]
      repositories: ["team/*"]
      secretEnv: HOOK_SECRET
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Events.Subscriptions[0]
	if string(s.Key()) != "from-the-environment-0123" || s.MaxAttempts != 12 || s.Backoff != 2*time.Second || c.Events.Keep != 720*time.Hour {
		t.Errorf("defaults: %+v", s)
	}
	for _, w := range []struct {
		typ, repo string
		want      bool
	}{
		{"dev.modelreg.stage.moved", "team/a", true},
		{"stage.moved", "team/a", true},
		{"dev.modelreg.version.deleted", "team/a", true},
		{"dev.modelreg.version.pushed", "team/a", false},
		{"dev.modelreg.stage.moved", "team/a/b", false},
		{"dev.modelreg.stage.moved", "other/a", false},
	} {
		if got := s.Wants(w.typ, w.repo); got != w.want {
			t.Errorf("Wants(%s, %s) = %v", w.typ, w.repo, got)
		}
	}
	if c, err := Parse(nil); err != nil || len(c.Events.Subscriptions) != 0 {
		t.Errorf("an empty file: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	sub := func(extra string) string {
		return "events:\n  subscriptions:\n    - name: a\n      url: https://x.example/h\n" + extra
	}
	for _, c := range []struct{ yaml, want string }{
		{"event:\n  subscriptions: []\n", "field event not found"},
		{sub("      secret: 0123456789abcdef\n      typs: [x]\n"), "field typs not found"},
		{sub(""), "exactly one of secret"},
		{sub("      secret: short\n"), "at least 16"},
		{sub("      secret: 0123456789abcdef\n      secretFile: /x\n"), "exactly one of secret"},
		{sub("      secretFile: /nonexistent/secret\n"), "secretFile"},
		{sub("      secret: 0123456789abcdef\n      types: [stage.move]\n"), `unknown event type "stage.move"`},
		{sub("      secret: 0123456789abcdef\n      repositories: [\"team/[\"]\n"), "invalid repository pattern"},
		{"events:\n  subscriptions:\n    - name: a\n      url: ftp://x\n      secret: 0123456789abcdef\n", "expected an http or https URL"},
		{sub("      secret: 0123456789abcdef\n") + "    - name: a\n      url: https://y.example\n      secret: 0123456789abcdef\n", "used twice"},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestParseTLS(t *testing.T) {
	c, err := Parse([]byte("tls:\n  cert: /etc/modelreg/tls.crt\n  key: /etc/modelreg/tls.key\n"))
	if err != nil || !c.TLS.Enabled() || c.TLS.Cert != "/etc/modelreg/tls.crt" || c.TLS.Key != "/etc/modelreg/tls.key" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, y := range []string{"tls:\n  cert: a.crt\n", "tls:\n  key: a.key\n"} {
		if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), "give both cert and key") {
			t.Errorf("%q: %v", y, err)
		}
	}
	if _, err := Parse([]byte("tls:\n  certificate: a.crt\n")); err == nil || !strings.Contains(err.Error(), "field certificate not found") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestParseEventsCAFile(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/bad.pem"
	os.WriteFile(bad, []byte("no certificate here"), 0o644)
	for y, want := range map[string]string{
		"events:\n  caFile: " + dir + "/missing.pem\n": "events.caFile",
		"events:\n  caFile: " + bad + "\n":             "holds no PEM certificate",
	} {
		if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", y, err, want)
		}
	}
	if c, err := Parse([]byte("events: {}\n")); err != nil || c.Events.RootCAs() != nil {
		t.Errorf("no caFile: the system pool (nil), got %v %v", c, err)
	}
}
