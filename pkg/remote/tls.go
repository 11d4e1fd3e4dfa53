package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// ErrUnknownAuthority means the registry's certificate is signed by an
// authority that neither the system pool nor Options.CAFile holds: the
// caller should name the authority's certificate (the CLI says --ca-file).
var ErrUnknownAuthority = errors.New("the registry's certificate is signed by an unknown authority")

// transports holds one transport per CA file ("" is the system pool
// alone), for the life of the process, so connections are reused across
// repositories and registries.
var transports = struct {
	sync.Mutex
	m map[string]http.RoundTripper
}{m: map[string]http.RoundTripper{"": baseTransport}}

// transport returns the shared transport that trusts the system pool and,
// when caFile is set, the certificates in it.
func transport(caFile string) (http.RoundTripper, error) {
	transports.Lock()
	defer transports.Unlock()
	if t, ok := transports.m[caFile]; ok {
		return t, nil
	}
	pool, err := CertPool(caFile)
	if err != nil {
		return nil, err
	}
	t := baseTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	transports.m[caFile] = t
	return t, nil
}

// CertPool is the system's pool of trusted authorities with the PEM
// certificates of caFile added: a private registry's CA is trusted beside,
// not instead of, the public ones, so one setting serves every registry a
// command reaches. An empty caFile returns the system pool.
func CertPool(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w; name a PEM file holding the certificate of the authority that signed the registry's certificate", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", caFile)
	}
	return pool, nil
}

// loopbackSchemes remembers, per host, what a loopback registry speaks,
// so each process asks once.
var loopbackSchemes = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// loopbackScheme is "https" when the registry at a loopback host answers a
// TLS handshake, else "http": local registries are usually plain HTTP
// (modelreg serve's default, distribution's, zot's), and one started with
// a certificate is reached over TLS without a flag.
//
// The probe is a TLS handshake that verifies nothing: it sends no request
// and only learns which protocol the port speaks; the connections that
// carry requests verify the certificate as always. A plain HTTP server
// reads a request line up to a line feed, so the probe offers one as an
// application protocol (ALPN) name: the server then refuses the bytes at
// once instead of waiting for the rest of a line the random parts of a
// ClientHello may never hold. TLS servers ignore the name (they pick h2
// or http/1.1). A port nobody listens on is "http", not remembered, so
// the error the caller then gets says the registry cannot be reached.
func loopbackScheme(host string) string {
	loopbackSchemes.Lock()
	defer loopbackSchemes.Unlock()
	if s, ok := loopbackSchemes.m[host]; ok {
		return s
	}
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(host, "443")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "http"
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{
		InsecureSkipVerify: true, // protocol detection only: no request is sent
		NextProtos:         []string{"h2", "http/1.1", "modelreg-probe\n"},
	})
	err = tc.HandshakeContext(ctx)
	var rh tls.RecordHeaderError
	switch {
	case err == nil:
		tc.Close()
		loopbackSchemes.m[host] = "https"
	case errors.As(err, &rh):
		// The answer is not TLS: an HTTP 400 for the garbled request line.
		loopbackSchemes.m[host] = "http"
	default:
		// A TLS alert (the server speaks TLS but refused something of
		// the handshake) means https; a cut connection tells nothing.
		var alert tls.AlertError
		if errors.As(err, &alert) {
			loopbackSchemes.m[host] = "https"
			return "https"
		}
		return "http"
	}
	return loopbackSchemes.m[host]
}

// explainTLS names the fix for a certificate the client does not accept,
// or returns "" for other errors.
func explainTLS(err error, what string) (string, error) {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		issuer := ""
		if ua.Cert != nil {
			issuer = fmt.Sprintf(" (issued by %q)", ua.Cert.Issuer.String())
		}
		return fmt.Sprintf("%s: the registry's TLS certificate%s is signed by an authority this machine does not trust", what, issuer),
			fmt.Errorf("%w: %w", ErrUnknownAuthority, err)
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		return fmt.Sprintf("%s: the registry's TLS certificate is not valid for this address: %v; use a name or address the certificate lists, or reissue it", what, he), err
	}
	var ie x509.CertificateInvalidError
	if errors.As(err, &ie) {
		return fmt.Sprintf("%s: the registry's TLS certificate is not valid: %v; renew it on the registry (or check this machine's clock)", what, ie), err
	}
	return "", err
}

// ErrSpeaksHTTPS means a request sent over plain HTTP reached a TLS
// server: the caller should use HTTPS (the CLI: drop --plain-http).
var ErrSpeaksHTTPS = errors.New("the registry speaks HTTPS, not plain HTTP")

// httpsHint turns the answer a Go TLS server gives a plain HTTP request
// (an HTTP/1.0 400 without a single header, and a body saying so; oras-go
// would report a bare 400) into ErrSpeaksHTTPS. A HEAD gets no body, so
// the bare status line decides: no registry answers without headers.
type httpsHint struct{ next http.RoundTripper }

func (h httpsHint) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err != nil || r.URL.Scheme != "http" || resp.StatusCode != http.StatusBadRequest || resp.ProtoAtLeast(1, 1) || len(resp.Header) > 0 {
		return resp, err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if r.Method == http.MethodHead || strings.Contains(string(b), "HTTP request to an HTTPS server") {
		return nil, fmt.Errorf("%s %s: %w", r.Method, r.URL.Redacted(), ErrSpeaksHTTPS)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
