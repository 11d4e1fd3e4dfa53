package remote

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry"
)

// A loopback registry is reached over whatever it speaks: HTTPS when it
// answers TLS, plain HTTP otherwise, and an explicit PlainHTTP wins.
func TestLoopbackScheme(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	host := func(s *httptest.Server) string {
		return strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://")
	}
	no := false
	for _, c := range []struct {
		o    Options
		host string
		want string
	}{
		{Options{}, host(plain), "http"},
		{Options{}, host(tlsSrv), "https"},
		{Options{PlainHTTP: &no}, host(plain), "https"},
	} {
		if got := c.o.Scheme(c.host); got != c.want {
			t.Errorf("Scheme(%s) = %s, want %s", c.host, got, c.want)
		}
	}
	// The probe's line feed makes a plain server answer at once, whatever
	// the random bytes of the ClientHello: many probes, none hanging.
	for i := 0; i < 100; i++ {
		loopbackSchemes.Lock()
		delete(loopbackSchemes.m, host(plain))
		loopbackSchemes.Unlock()
		if got := loopbackScheme(host(plain)); got != "http" {
			t.Fatalf("probe %d of a plain server: %s", i, got)
		}
	}
}

// A certificate from an unknown authority is refused with
// ErrUnknownAuthority; with that authority in CAFile it is accepted.
func TestCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Content-Digest", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Content-Length", "0")
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	ref := registry.Reference{Registry: host, Repository: "team/m", Reference: "1.0.0"}
	o := Options{Username: "u", Password: "p"}
	repo, err := o.Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = repo.Resolve(context.Background(), "1.0.0")
	err = Explain(err, ref.String())
	if !errors.Is(err, ErrUnknownAuthority) || !strings.Contains(err.Error(), "does not trust") {
		t.Fatalf("unknown CA: %v", err)
	}

	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	o.CAFile = ca
	if repo, err = o.Repository(ref); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Resolve(context.Background(), "1.0.0"); err != nil {
		t.Errorf("with the CA file: %v", err)
	}

	o.CAFile = filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(o.CAFile, []byte("not a certificate"), 0o644)
	if _, err := o.Repository(ref); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
}

// A plain HTTP request to a TLS server is told to use HTTPS, for HEAD
// (no body) as for GET.
func TestSpeaksHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	yes := true
	o := Options{PlainHTTP: &yes, Username: "u", Password: "p"}
	repo, err := o.Repository(registry.Reference{Registry: host, Repository: "team/m", Reference: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = repo.Resolve(context.Background(), "1.0.0")
	if !errors.Is(Explain(err, host), ErrSpeaksHTTPS) {
		t.Errorf("HEAD over HTTP to a TLS server: %v", err)
	}
	_, _, err = repo.FetchReference(context.Background(), "1.0.0")
	if !errors.Is(Explain(err, host), ErrSpeaksHTTPS) {
		t.Errorf("GET over HTTP to a TLS server: %v", err)
	}
}

// The client speaks HTTP/1.1 to a registry that offers HTTP/2, so parts
// and ranges keep one TCP connection each (docs/transfer.md).
func TestHTTP1Only(t *testing.T) {
	protos := make(chan string, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Proto
		w.Header().Set("Docker-Content-Digest", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Content-Length", "0")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	// The server does offer h2: a default Go client negotiates it.
	resp, err := srv.Client().Get(srv.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := <-protos; p != "HTTP/2.0" {
		t.Fatalf("the test server does not offer HTTP/2 (%s)", p)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref := registry.Reference{Registry: host, Repository: "team/m", Reference: "1.0.0"}
	repo, err := Options{Username: "u", Password: "p", CAFile: ca}.Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Resolve(context.Background(), "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if p := <-protos; p != "HTTP/1.1" {
		t.Errorf("modelreg's client spoke %s", p)
	}
}
