package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"oras.land/oras-go/v2/registry"
)

func TestParseReference(t *testing.T) {
	ref, err := ParseReference("localhost:5000/team/fraud:1.4.0")
	if err != nil || ref.Registry != "localhost:5000" || ref.Repository != "team/fraud" || ref.Reference != "1.4.0" {
		t.Errorf("%+v %v", ref, err)
	}
	for _, bad := range []string{"fraud", "localhost:5000/Team/x:1", "localhost:5000/x:bad tag", "localhost:5000/x@sha256:zz"} {
		_, err := ParseReference(bad)
		if err == nil || !strings.Contains(err.Error(), "expected REGISTRY/REPOSITORY") {
			t.Errorf("ParseReference(%q): %v", bad, err)
		}
	}
}

func TestIsLocalhost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1:5000": true, "[::1]:5000": true, "127.1.2.3": true, "registry.localhost": true,
		"ghcr.io": false, "10.0.0.1:5000": false, "localhost.example.com": false,
	} {
		if got := IsLocalhost(host); got != want {
			t.Errorf("IsLocalhost(%q) = %v", host, got)
		}
	}
}

func TestScheme(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		plain *bool
		host  string
		want  string
	}{
		{nil, "localhost:5000", "http"},
		{nil, "127.0.0.1:5000", "http"},
		{nil, "[::1]:5000", "http"},
		{nil, "ghcr.io", "https"},
		{nil, "10.0.0.1:5000", "https"},
		{&yes, "registry.internal:5000", "http"},
		{&no, "localhost:5000", "https"},
	} {
		o := Options{PlainHTTP: c.plain}
		if got := o.Scheme(c.host); got != c.want {
			t.Errorf("Scheme(%q) with PlainHTTP %v = %s, want %s", c.host, c.plain, got, c.want)
		}
		repo, err := o.Repository(registry.Reference{Registry: c.host, Repository: "team/m", Reference: "1.0.0"})
		if err != nil {
			t.Fatal(err)
		}
		if repo.PlainHTTP != (c.want == "http") {
			t.Errorf("Repository(%q).PlainHTTP = %v, Scheme says %s", c.host, repo.PlainHTTP, c.want)
		}
	}
}

// tokenRegistry asks for a bearer token on every request without one and
// counts the tokens it hands out.
func tokenRegistry(t *testing.T) (host string, tokens *atomic.Int64) {
	tokens = new(atomic.Int64)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			tokens.Add(1)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"token":"t0k3n"}`)
		case r.Header.Get("Authorization") != "Bearer t0k3n":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="test",scope="repository:team/m:pull"`)
			w.WriteHeader(http.StatusUnauthorized)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"name":"team/m","tags":["1.0.0"]}`)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), tokens
}

// Every Repository of one Options value, and of an equal one built again
// (the CLI builds Options per call), uses one client and so one token;
// other credentials get their own client.
func TestTokensReusedAcrossCalls(t *testing.T) {
	host, tokens := tokenRegistry(t)
	ref := registry.Reference{Registry: host, Repository: "team/m"}
	list := func(o Options) {
		t.Helper()
		repo, err := o.Repository(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Tags(context.Background(), "", func([]string) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	o := plainOptions()
	list(o)
	list(o)
	list(plainOptions())
	if n := tokens.Load(); n != 1 {
		t.Errorf("%d tokens fetched for three calls, want 1", n)
	}
	a, _ := o.Client(host)
	b, _ := plainOptions().Client(host)
	other := plainOptions()
	other.Username = "someone-else"
	c, _ := other.Client(host)
	if a != b || a == c {
		t.Errorf("equal options share a client: %v, other credentials do not: %v", a == b, a != c)
	}
	list(other)
	if n := tokens.Load(); n != 2 {
		t.Errorf("%d tokens fetched after another user's call, want 2", n)
	}
}

// Logging out forgets the host's clients, whose tokens came from the
// credentials just removed.
func TestLogoutForgetsClients(t *testing.T) {
	o := Options{ConfigPath: filepath.Join(t.TempDir(), "config.json")}
	a, err := o.Client("registry.example")
	if err != nil {
		t.Fatal(err)
	}
	o.Logout(context.Background(), "registry.example")
	b, err := o.Client("registry.example")
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Error("the client from before the logout is still used")
	}
}

// A registry that answers HTTPS with plain HTTP is explained without
// naming a CLI flag, and is recognizable as ErrPlainHTTP.
func TestExplainPlainHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	_, err := http.Get("https://" + host + "/v2/")
	if err == nil {
		t.Fatal("an HTTPS request to a plain HTTP server succeeded")
	}
	e := Explain(err, "registry.example.com/team/m")
	if !errors.Is(e, ErrPlainHTTP) || !strings.Contains(e.Error(), "speaks plain HTTP") || strings.Contains(e.Error(), "--") {
		t.Errorf("explained as %q (ErrPlainHTTP: %v)", e, errors.Is(e, ErrPlainHTTP))
	}
}
