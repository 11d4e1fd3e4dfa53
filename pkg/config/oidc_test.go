package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseOIDC(t *testing.T) {
	t.Setenv("OIDC_SECRET", "s3cret")
	c, err := Parse([]byte(`
oidc:
  issuer: https://id.example.com/realms/ml
  clientID: modelreg
  clientSecretEnv: OIDC_SECRET
  audiences: [modelreg, modelreg-cli]
`))
	if err != nil {
		t.Fatal(err)
	}
	o := c.OIDC
	if o.Secret() != "s3cret" || o.GroupsClaim != "groups" || o.SessionLifetime != 8*time.Hour ||
		!slices.Equal(o.Scopes, []string{"openid", "profile", "email"}) || !slices.Equal(o.AcceptedAudiences(), []string{"modelreg", "modelreg-cli"}) {
		t.Errorf("defaults: %+v", o)
	}
	c, err = Parse([]byte("oidc:\n  issuer: http://127.0.0.1:9000\n  clientID: modelreg\n  scopes: [groups]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.OIDC.Scopes, []string{"openid", "groups"}) || !slices.Equal(c.OIDC.AcceptedAudiences(), []string{"modelreg"}) || c.OIDC.Secret() != "" {
		t.Errorf("a public client on loopback: %+v", c.OIDC)
	}
	if c, err := Parse(nil); err != nil || c.OIDC != nil {
		t.Errorf("no oidc section: %+v %v", c, err)
	}
}

func TestParseOIDCRefuses(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"oidc:\n  clientID: modelreg\n", "oidc.issuer"},
		{"oidc:\n  issuer: http://id.example.com\n  clientID: modelreg\n", "over https"},
		{"oidc:\n  issuer: https://id.example.com\n", "oidc.clientID is required"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  audiences: [cli]\n", "does not include oidc.clientID"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  clientSecret: a\n  clientSecretEnv: B\n", "at most one"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  clientSecretFile: /nonexistent/secret\n", "clientSecretFile"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  clientSecretEnv: MODELREG_TEST_UNSET_SECRET\n", "is empty or unset"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  redirectURL: https://r.example.com/callback\n", "oidc.redirectURL"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  sessionLifetime: 1s\n", "at least 1m"},
		{"oidc:\n  issuer: https://id.example.com\n  clientID: modelreg\n  groupClaim: g\n", "field groupClaim not found"},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error mentioning %q", c.yaml, err, c.want)
		}
	}
}
