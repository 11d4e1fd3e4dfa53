package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/config"
)

// A session cookie is the server's word only: tampered, expired, of
// another issuer, or a sign-in cookie passed as a session, it is no
// session. (TestOIDC in test/e2e runs the sign-in against a real
// provider.)
func TestSessionCookie(t *testing.T) {
	o := &oidcAuth{cfg: &config.OIDC{Issuer: "https://id.example.com"}, key: []byte("0123456789abcdef0123456789abcdef")}
	withCookie := func(v string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: v})
		return r
	}
	future := time.Now().Add(time.Hour).Unix()
	good := o.seal("session", session{Name: "rita", Groups: []string{"release"}, Issuer: "https://id.example.com", Expires: future})
	if s, ok := o.sessionOf(withCookie(good)); !ok || s.Name != "rita" || s.Kind != "user" || len(s.Groups) != 1 || s.Groups[0] != "release" {
		t.Fatalf("a good session: %+v %v", s, ok)
	}
	payload, sig, _ := strings.Cut(good, ".")
	forged := o.seal("session", session{Name: "root", Issuer: "https://id.example.com", Expires: future})
	forgedPayload, _, _ := strings.Cut(forged, ".")
	other := &oidcAuth{cfg: o.cfg, key: []byte("another key, another data dir..")}
	for name, v := range map[string]string{
		"another name under rita's signature": forgedPayload + "." + sig,
		"no signature":                        payload,
		"signed by another key":               other.seal("session", session{Name: "rita", Issuer: "https://id.example.com", Expires: future}),
		"expired":                             o.seal("session", session{Name: "rita", Issuer: "https://id.example.com", Expires: time.Now().Add(-time.Second).Unix()}),
		"of another issuer":                   o.seal("session", session{Name: "rita", Issuer: "https://other.example.com", Expires: future}),
		"a sign-in cookie":                    o.seal("flow", session{Name: "rita", Issuer: "https://id.example.com", Expires: future}),
		"garbage":                             "%%%.%%%",
	} {
		if s, ok := o.sessionOf(withCookie(v)); ok {
			t.Errorf("%s: accepted as %+v", name, s)
		}
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/models/team/a":            "/models/team/a",
		"/models/team/a?metrics=x":  "/models/team/a?metrics=x",
		"":                          "",
		"//evil.example.com/x":      "",
		"/\\evil.example.com":       "",
		"https://evil.example.com/": "",
		"models/team/a":             "",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, bad := range []string{"robot:ci", "robot$ci", "al ice", "a\nb"} {
		if checkName(bad) == nil {
			t.Errorf("%q accepted as a person's name", bad)
		}
	}
	for _, good := range []string{"rita", "rita@example.com", "oidc:rita"} {
		if err := checkName(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
}

func TestOIDCNeedsAnAccessPolicy(t *testing.T) {
	_, err := New(context.Background(), Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Config: &config.Config{OIDC: &config.OIDC{Issuer: "https://id.example.com", ClientID: "modelreg"}}})
	if err == nil || !strings.Contains(err.Error(), "needs an access policy") {
		t.Fatalf("oidc without an access policy: %v", err)
	}
}
