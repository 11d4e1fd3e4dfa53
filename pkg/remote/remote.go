// Package remote connects to OCI registries the way modelreg's users expect:
// credentials from the docker/oras credential store, plain HTTP for
// localhost unless the registry there answers TLS, a private CA trusted
// beside the system's, one retry policy (RetryPolicy) for 5xx answers and broken
// connections, token caches reused across calls, and errors that say what
// went wrong and how to fix it.
package remote

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// Options configures how a registry is reached. The zero value reads
// credentials from the docker config and picks plain HTTP for localhost.
type Options struct {
	// PlainHTTP forces HTTP (true) or HTTPS (false); nil picks HTTPS,
	// except for localhost and loopback addresses, where it picks HTTPS
	// when the registry answers a TLS handshake and HTTP otherwise.
	PlainHTTP *bool
	// CAFile is a PEM bundle of certificate authorities trusted beside the
	// system pool, for registries with a private CA (the CLI's --ca-file,
	// MODELREG_CA_FILE).
	CAFile string
	// ConfigPath is a docker-style config.json holding credentials; empty
	// means the docker default ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
	ConfigPath string
	// Username and Password, when set, override the credential store.
	Username, Password string
	// UserAgent is sent with every request.
	UserAgent string
	// Header is added to every request.
	Header http.Header
	// Retry is the retry policy of every request; the zero value is
	// DefaultRetryPolicy.
	Retry RetryPolicy
}

// withDefaults fills the zero fields of o that have a default other than
// their zero value.
func (o Options) withDefaults() Options {
	o.Retry = o.Retry.withDefaults()
	return o
}

// ParseReference parses REGISTRY/REPOSITORY[:TAG|@DIGEST] and explains the
// expected form when it fails.
func ParseReference(s string) (registry.Reference, error) {
	ref, err := registry.ParseReference(s)
	if err != nil {
		detail := strings.TrimPrefix(err.Error(), errdef.ErrInvalidReference.Error()+": ")
		return ref, fmt.Errorf("invalid reference %q: %s; expected REGISTRY/REPOSITORY[:TAG|@DIGEST], e.g. localhost:5000/team/fraud-detector:1.4.0", s, detail)
	}
	return ref, nil
}

// IsLocalhost reports whether a registry host is on this machine, where
// plain HTTP is the sensible default.
func IsLocalhost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Scheme is "http" or "https" for a registry host: what PlainHTTP says,
// or, when it is nil, HTTPS except on localhost and loopback addresses,
// where the registry is asked once per process whether it speaks TLS
// (loopbackScheme). It is the one place that decides; everything that
// builds a registry URL or an oras-go client asks it.
func (o Options) Scheme(host string) string {
	switch {
	case o.PlainHTTP != nil && *o.PlainHTTP:
		return "http"
	case o.PlainHTTP != nil || !IsLocalhost(host):
		return "https"
	}
	return loopbackScheme(host)
}

// plainHTTP is Scheme as oras-go's PlainHTTP flag.
func (o Options) plainHTTP(host string) bool { return o.Scheme(host) == "http" }

// baseTransport is shared so connections are reused across repositories
// and registries. It speaks HTTP/1.1 only, also to registries that offer
// HTTP/2: transfers in parts and in ranges get their speed from several
// TCP connections (each with its own congestion window and its own share
// of a per-connection limit), which HTTP/2 would multiplex onto one.
// Measured on loopback TLS against modelreg serve, a 256 MiB pull took
// about 0.8 s over HTTP/2 and 0.55 s over HTTP/1.1 (docs/transfer.md).
var baseTransport = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	t.MaxIdleConnsPerHost = 32
	t.WriteBufferSize = 1 << 20
	t.ReadBufferSize = 1 << 20
	t.ResponseHeaderTimeout = 5 * time.Minute
	return t
}()

// clients holds one auth.Client per registry host and Options value, for
// the life of the process, so that a token fetched for one call (a
// bearer token for a repository scope, the host's auth scheme) serves the
// next ones instead of being fetched again. Options is a value that
// callers copy and rebuild (the CLI builds one per call), so a client is
// found by the settings it was made from, not by the copy's address.
var clients = struct {
	sync.Mutex
	m map[clientKey]*auth.Client
}{m: map[clientKey]*auth.Client{}}

// clientKey is every setting an auth.Client depends on.
type clientKey struct {
	host, configPath, caFile, username, password, userAgent, header string
	retry                                                           RetryPolicy
}

func (o Options) clientKey(host string) clientKey {
	var h strings.Builder
	keys := slices.Sorted(maps.Keys(o.Header))
	for _, k := range keys {
		for _, v := range o.Header[k] {
			fmt.Fprintf(&h, "%s: %s\n", k, v)
		}
	}
	return clientKey{host: host, configPath: o.ConfigPath, caFile: o.CAFile, username: o.Username, password: o.Password,
		userAgent: o.UserAgent, header: h.String(), retry: o.Retry}
}

// Client returns the authenticating, retrying HTTP client for a registry.
// Calls with the same host and equal options return the same client, and
// so share its token cache.
func (o Options) Client(host string) (*auth.Client, error) {
	o = o.withDefaults()
	key := o.clientKey(host)
	clients.Lock()
	defer clients.Unlock()
	if c, ok := clients.m[key]; ok {
		return c, nil
	}
	c, err := o.newClient(host)
	if err != nil {
		return nil, err
	}
	clients.m[key] = c
	return c, nil
}

// forget drops the cached clients of host, whose credentials changed.
func forget(host string) {
	clients.Lock()
	defer clients.Unlock()
	for k := range clients.m {
		if k.host == host {
			delete(clients.m, k)
		}
	}
}

// newClient makes an auth.Client with an empty token cache.
func (o Options) newClient(host string) (*auth.Client, error) {
	base, err := transport(o.CAFile)
	if err != nil {
		return nil, err
	}
	c := &auth.Client{
		Client: &http.Client{Transport: o.Retry.transport(httpsHint{base})},
		Cache:  auth.NewCache(),
		Header: http.Header{},
	}
	for k, v := range o.Header {
		c.Header[k] = v
	}
	if o.UserAgent != "" {
		c.Header.Set("User-Agent", o.UserAgent)
	}
	switch {
	case o.Username != "" || o.Password != "":
		c.Credential = auth.StaticCredential(host, auth.Credential{Username: o.Username, Password: o.Password})
	default:
		store, err := o.Store()
		if err != nil {
			return nil, err
		}
		c.Credential = credentials.Credential(store)
	}
	return c, nil
}

// Store opens the credential store shared with docker and oras.
func (o Options) Store() (credentials.Store, error) {
	opts := credentials.StoreOptions{AllowPlaintextPut: true, DetectDefaultNativeStore: true}
	var (
		s   *credentials.DynamicStore
		err error
	)
	if o.ConfigPath != "" {
		s, err = credentials.NewStore(o.ConfigPath, opts)
	} else {
		s, err = credentials.NewStoreFromDocker(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the credential store: %w", err)
	}
	return s, nil
}

// Repository connects to the repository named by ref.
func (o Options) Repository(ref registry.Reference) (*orasremote.Repository, error) {
	client, err := o.Client(ref.Registry)
	if err != nil {
		return nil, err
	}
	return &orasremote.Repository{
		Client:          client,
		Reference:       ref,
		PlainHTTP:       o.plainHTTP(ref.Registry),
		TagListPageSize: 1000,
	}, nil
}

// Registry connects to a registry host, for login and catalog calls.
func (o Options) Registry(host string) (*orasremote.Registry, error) {
	reg, err := orasremote.NewRegistry(host)
	if err != nil {
		return nil, fmt.Errorf("invalid registry %q: expected HOST[:PORT], e.g. localhost:5000", host)
	}
	client, err := o.Client(host)
	if err != nil {
		return nil, err
	}
	reg.Client = client
	reg.PlainHTTP = o.plainHTTP(host)
	return reg, nil
}

// Login checks username and password against the registry and stores them
// in the credential store, where oras and docker find them too.
func (o Options) Login(ctx context.Context, host, username, password string) error {
	reg, err := o.Registry(host)
	if err != nil {
		return err
	}
	// A client of its own: credentials.Login shares the client's token
	// cache, which must not keep what rejected credentials left in it.
	if reg.Client, err = o.withDefaults().newClient(host); err != nil {
		return err
	}
	store, err := o.Store()
	if err != nil {
		return err
	}
	if err := credentials.Login(ctx, store, reg, auth.Credential{Username: username, Password: password}); err != nil {
		return Explain(err, host)
	}
	forget(host)
	return nil
}

// Logout removes the stored credentials of a registry.
func (o Options) Logout(ctx context.Context, host string) error {
	store, err := o.Store()
	if err != nil {
		return err
	}
	defer forget(host)
	return credentials.Logout(ctx, store, host)
}

// HasModelregExtension reports whether the registry is modelreg serve
// (it lists the _modelreg extension at /v2/_oci/ext/discover), which
// enforces promotion policy and writes promotion records itself.
func (o Options) HasModelregExtension(ctx context.Context, host string) bool {
	client, err := o.Client(host)
	if err != nil {
		return false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.Scheme(host)+"://"+host+"/v2/_oci/ext/discover", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Extensions []struct {
			Name string `json:"name"`
		} `json:"extensions"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body) != nil {
		return false
	}
	for _, e := range body.Extensions {
		if e.Name == "_modelreg" {
			return true
		}
	}
	return false
}

// Explain turns a registry error into one that names the problem and the
// fix. what names the object of the failed call (a reference, a host).
func Explain(err error, what string) error {
	if err == nil {
		return nil
	}
	var ee *explained
	if errors.As(err, &ee) || errors.Is(err, context.Canceled) {
		return err
	}
	msg := ""
	var resp *errcodeResponse
	switch {
	case asErrorResponse(err, &resp):
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			why := ""
			if len(resp.Errors) > 0 {
				// The registry's reason (an expired ID token, a revoked
				// robot) tells the fix better than a generic login hint.
				why = ": " + resp.detail()
			}
			msg = fmt.Sprintf("%s: authentication required or credentials rejected (401)%s; log in with `modelreg login %s` (or `oras login`/`docker login`)", what, why, resp.URL.Host)
		case http.StatusForbidden:
			msg = fmt.Sprintf("%s: access denied (403): %s", what, resp.detail())
		case http.StatusNotFound:
			msg = fmt.Sprintf("%s: not found (404): %s; check the name, or list what exists with `modelreg list`", what, resp.detail())
		case http.StatusTooManyRequests:
			msg = fmt.Sprintf("%s: the registry is rate-limiting requests (429); retry later", what)
		default:
			if resp.StatusCode >= 500 {
				msg = fmt.Sprintf("%s: the registry failed (%d) after retries: %s", what, resp.StatusCode, resp.detail())
			}
		}
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		msg = fmt.Sprintf("%s: the registry requires authentication and no credentials are stored for it; log in with `modelreg login %s` (or `oras login`/`docker login`), or set MODELREG_USERNAME and MODELREG_PASSWORD", what, hostOf(what))
	case errors.Is(err, errdef.ErrNotFound):
		msg = fmt.Sprintf("%s: not found; check the name, or list what exists with `modelreg list`", what)
	case isTLSCertificate(err):
		msg, err = explainTLS(err, what)
	case isUnreachable(err):
		msg = fmt.Sprintf("%s: cannot reach the registry: %v; check the address and that the registry is running", what, rootCause(err))
	case errors.Is(err, ErrSpeaksHTTPS):
		msg = fmt.Sprintf("%s: the registry speaks HTTPS, not plain HTTP", what)
	case isTLSMismatch(err):
		msg = fmt.Sprintf("%s: the registry speaks plain HTTP, not HTTPS", what)
		err = fmt.Errorf("%w: %w", ErrPlainHTTP, err)
	}
	if msg == "" {
		return err
	}
	return &explained{msg: msg, err: err}
}

// ErrPlainHTTP means the registry answered HTTPS with plain HTTP: the
// caller should allow plain HTTP for it (Options.PlainHTTP; the CLI says
// --plain-http).
var ErrPlainHTTP = errors.New("the registry speaks plain HTTP")

type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// IsNotFound reports whether err means the object does not exist.
func IsNotFound(err error) bool {
	var resp *errcodeResponse
	if asErrorResponse(err, &resp) {
		return resp.StatusCode == http.StatusNotFound
	}
	return errors.Is(err, errdef.ErrNotFound)
}

// IsDenied reports whether the registry refused the request (403): on
// modelreg serve, its gate or a missing right.
func IsDenied(err error) bool {
	var resp *errcodeResponse
	return asErrorResponse(err, &resp) && resp.StatusCode == http.StatusForbidden
}

// hostOf extracts the registry host from a reference or host string.
func hostOf(what string) string {
	host, _, _ := strings.Cut(what, "/")
	return host
}

func isUnreachable(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns)
}

func isTLSCertificate(err error) bool {
	var ce *tls.CertificateVerificationError
	return errors.As(err, &ce)
}

func isTLSMismatch(err error) bool {
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

func rootCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
