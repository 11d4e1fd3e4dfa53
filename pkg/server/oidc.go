package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/config"
	"golang.org/x/oauth2"
)

// The web UI's sign-in routes (OIDC): the guard serves them before it
// asks for credentials.
const (
	LoginPath    = "/ui/login"
	CallbackPath = "/ui/callback"
	LogoutPath   = "/ui/logout"
)

const (
	// sessionCookie holds a signed-in person's web session: name, groups
	// and expiry, signed by the server's session key. It is accepted on
	// the web UI's pages only, never on /v2/: a cookie rides along on
	// requests other sites make, so it must not authorize a registry
	// write.
	sessionCookie = "modelreg_session"
	// flowCookie holds one sign-in's state, nonce and PKCE verifier
	// between /ui/login and /ui/callback.
	flowCookie = "modelreg_oidc"
	// flowLifetime bounds the time a person has at the provider.
	flowLifetime = 10 * time.Minute
)

// oidcAuth verifies an OpenID Connect provider's ID tokens and signs
// people in to the web UI with the authorization code flow (state, nonce,
// PKCE). The provider is discovered on first use and until it answers,
// so a registry starts while its provider is down.
type oidcAuth struct {
	cfg *config.OIDC
	log *slog.Logger
	// key signs session and sign-in cookies (HMAC-SHA256); kept in the
	// data directory, so sessions survive a restart and replicas sharing
	// the directory accept each other's.
	key []byte
	// client fetches the discovery document, the keys and the code
	// exchange; bounded, so a hung provider cannot hold a request.
	client *http.Client

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

func newOIDCAuth(cfg *config.OIDC, data string, log *slog.Logger) (*oidcAuth, error) {
	key, err := httpSecret(filepath.Join(data, "modelreg", "session-key"), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("the web session key: %w", err)
	}
	o := &oidcAuth{cfg: cfg, log: log, key: key, client: &http.Client{Timeout: 15 * time.Second}}
	if _, _, err := o.discover(); err != nil {
		log.Warn("the OIDC provider is not reachable yet: ID tokens and web sign-ins are refused until it is", "issuer", cfg.Issuer, "err", err)
	} else {
		log.Info("OIDC sign-in enabled", "issuer", cfg.Issuer, "client_id", cfg.ClientID, "audiences", cfg.AcceptedAudiences())
	}
	return o, nil
}

// discover reads the provider's discovery document once (and again after
// a failure).
func (o *oidcAuth) discover() (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, o.verifier, nil
	}
	// The context outlives this call: the provider's key set fetches
	// keys with it whenever the provider rotates them.
	ctx := oidc.ClientContext(context.Background(), o.client)
	p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("discovering the OIDC provider %s: %w; check oidc.issuer and that the registry can reach it", o.cfg.Issuer, err)
	}
	// The audience is checked by verify against every accepted one.
	o.provider, o.verifier = p, p.Verifier(&oidc.Config{SkipClientIDCheck: true})
	return o.provider, o.verifier, nil
}

// verify checks an ID token (signature by the provider's keys, issuer,
// audience, expiry) and maps its claims to a subject: what the guard
// calls for `-u oidc -p ID_TOKEN` and at the token endpoint.
func (o *oidcAuth) verify(ctx context.Context, raw string) (access.Subject, error) {
	tok, err := o.idToken(ctx, raw)
	if err != nil {
		return access.Subject{}, err
	}
	return o.subject(tok)
}

func (o *oidcAuth) idToken(ctx context.Context, raw string) (*oidc.IDToken, error) {
	_, v, err := o.discover()
	if err != nil {
		return nil, err
	}
	tok, err := v.Verify(ctx, strings.TrimSpace(raw))
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return nil, fmt.Errorf("the ID token expired at %s; sign in to %s again for a new one", exp.Expiry.UTC().Format(time.RFC3339), o.cfg.Issuer)
		}
		return nil, fmt.Errorf("not an ID token of %s: %v", o.cfg.Issuer, err)
	}
	accepted := o.cfg.AcceptedAudiences()
	if !slices.ContainsFunc(tok.Audience, func(a string) bool { return slices.Contains(accepted, a) }) {
		return nil, fmt.Errorf("the ID token was issued for audience %s, this registry accepts %s: get the token with client %s (or add its client to oidc.audiences)",
			strings.Join(tok.Audience, ", "), strings.Join(accepted, ", "), o.cfg.ClientID)
	}
	return tok, nil
}

// subject maps a verified token's claims to the user and groups the
// access policy decides on.
func (o *oidcAuth) subject(tok *oidc.IDToken) (access.Subject, error) {
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return access.Subject{}, fmt.Errorf("the ID token's claims: %w", err)
	}
	name, err := o.username(claims)
	if err != nil {
		return access.Subject{}, err
	}
	name = o.cfg.UsernamePrefix + name
	if err := checkName(name); err != nil {
		return access.Subject{}, err
	}
	var groups []string
	switch g := claims[o.cfg.GroupsClaim].(type) {
	case nil:
	case string:
		groups = []string{o.cfg.GroupsPrefix + g}
	case []any:
		for _, v := range g {
			s, ok := v.(string)
			if !ok {
				return access.Subject{}, fmt.Errorf("the ID token's %q claim (oidc.groupsClaim) holds %v, not a group name", o.cfg.GroupsClaim, v)
			}
			groups = append(groups, o.cfg.GroupsPrefix+s)
		}
	default:
		return access.Subject{}, fmt.Errorf("the ID token's %q claim (oidc.groupsClaim) is a %T, not a list of group names", o.cfg.GroupsClaim, g)
	}
	return access.Subject{Kind: access.KindUser, Name: name, Groups: groups}, nil
}

func (o *oidcAuth) username(claims map[string]any) (string, error) {
	if c := o.cfg.UsernameClaim; c != "" {
		v, _ := claims[c].(string)
		if v == "" {
			return "", fmt.Errorf("the ID token has no %q claim (oidc.usernameClaim): have the provider include it, or name another claim", c)
		}
		return v, nil
	}
	if v, _ := claims["preferred_username"].(string); v != "" {
		return v, nil
	}
	if v, _ := claims["email"].(string); v != "" {
		if verified, ok := claims["email_verified"].(bool); ok && !verified {
			return "", fmt.Errorf("the ID token names no preferred_username and its email %s is not verified: verify it at the provider, or set oidc.usernameClaim", v)
		}
		return v, nil
	}
	if v, _ := claims["sub"].(string); v != "" {
		return v, nil
	}
	return "", errors.New("the ID token names no user (preferred_username, email or sub)")
}

// checkName refuses a name a policy would read as another kind of
// subject: a group lists robots as robot:NAME, so a person named so
// would inherit a robot's groups.
func checkName(name string) error {
	if strings.HasPrefix(name, "robot:") || strings.HasPrefix(name, RobotPrefix) {
		return fmt.Errorf("the ID token's user name %q is a robot's: set oidc.usernamePrefix, or rename the user at the provider", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == ' ' {
			return fmt.Errorf("the ID token's user name %q has spaces or control characters: set oidc.usernameClaim to a claim without", name)
		}
	}
	return nil
}

// session is a signed-in person's web session, as its cookie holds it.
type session struct {
	Name    string   `json:"n"`
	Groups  []string `json:"g,omitempty"`
	Issuer  string   `json:"i"`
	Expires int64    `json:"e"`
}

// flow is one sign-in between /ui/login and /ui/callback.
type flow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"r"`
	Expires  int64  `json:"e"`
}

// seal signs v for a cookie; purpose keeps a flow cookie from passing as
// a session.
func (o *oidcAuth) seal(purpose string, v any) string {
	b, _ := json.Marshal(v)
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(o.mac(purpose, p))
}

func (o *oidcAuth) mac(purpose, payload string) []byte {
	m := hmac.New(sha256.New, o.key)
	m.Write([]byte(purpose + "\x00" + payload))
	return m.Sum(nil)
}

// open checks a sealed cookie value and decodes it into v.
func (o *oidcAuth) open(purpose, raw string, v any) bool {
	p, sig, ok := strings.Cut(raw, ".")
	if !ok {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, o.mac(purpose, p)) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	return err == nil && json.Unmarshal(b, v) == nil
}

// sessionOf is the request's web session, if it carries a valid one.
func (o *oidcAuth) sessionOf(r *http.Request) (access.Subject, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return access.Subject{}, false
	}
	var s session
	if !o.open("session", c.Value, &s) || s.Issuer != o.cfg.Issuer || time.Now().Unix() >= s.Expires || s.Name == "" {
		return access.Subject{}, false
	}
	return access.Subject{Kind: access.KindUser, Name: s.Name, Groups: s.Groups}, true
}

// secure says whether cookies must be Secure: the request came over TLS
// or the registry is known by an https address (behind a TLS proxy).
func (o *oidcAuth) secure(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(o.cfg.RedirectURL, "https://")
}

func (o *oidcAuth) oauth2Config(r *http.Request, p *oidc.Provider) *oauth2.Config {
	redirect := o.cfg.RedirectURL
	if redirect == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		redirect = scheme + "://" + r.Host + CallbackPath
	}
	ep := p.Endpoint()
	if o.cfg.Secret() == "" {
		// A public client names itself in the form; PKCE binds the code.
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.Secret(), Endpoint: ep, RedirectURL: redirect, Scopes: o.cfg.Scopes}
}

// ServeHTTP serves the sign-in routes.
func (o *oidcAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case LoginPath:
		o.login(w, r)
	case CallbackPath:
		o.callback(w, r)
	case LogoutPath:
		o.logout(w, r)
	}
}

// login starts a sign-in: a fresh state, nonce and PKCE verifier kept in
// a signed cookie, and a redirect to the provider.
func (o *oidcAuth) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		http.Error(w, "sign in with GET "+LoginPath, http.StatusMethodNotAllowed)
		return
	}
	p, _, err := o.discover()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	f := flow{State: randomString(), Nonce: randomString(), Verifier: oauth2.GenerateVerifier(), Next: localPath(r.URL.Query().Get("next")),
		Expires: time.Now().Add(flowLifetime).Unix()}
	// Lax, not Strict: the provider's redirect back is a navigation from
	// another site, which must carry it.
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: o.seal("flow", f), Path: CallbackPath, MaxAge: int(flowLifetime / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: o.secure(r)})
	u := o.oauth2Config(r, p).AuthCodeURL(f.State, oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier))
	http.Redirect(w, r, u, http.StatusFound)
}

// callback finishes a sign-in: the state matches the flow's cookie, the
// code is exchanged (with the PKCE verifier), the ID token verified and
// its nonce matched; then the session cookie is set.
func (o *oidcAuth) callback(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, msg string) {
		o.log.Warn("web sign-in refused", "reason", msg, "remote", r.RemoteAddr)
		http.Error(w, "sign-in failed: "+msg+"; sign in again at "+LoginPath, status)
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		fail(http.StatusUnauthorized, fmt.Sprintf("the provider answered %s: %s", e, q.Get("error_description")))
		return
	}
	c, err := r.Cookie(flowCookie)
	var f flow
	if err != nil || !o.open("flow", c.Value, &f) {
		fail(http.StatusBadRequest, "this browser did not start the sign-in (no sign-in cookie)")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: "", Path: CallbackPath, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: o.secure(r)})
	if time.Now().Unix() >= f.Expires {
		fail(http.StatusBadRequest, "the sign-in took longer than "+flowLifetime.String())
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.State)) != 1 {
		fail(http.StatusBadRequest, "the state does not match this browser's sign-in")
		return
	}
	p, _, err := o.discover()
	if err != nil {
		fail(http.StatusBadGateway, err.Error())
		return
	}
	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, o.client)
	t, err := o.oauth2Config(r, p).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(f.Verifier))
	if err != nil {
		fail(http.StatusBadGateway, "exchanging the code at "+o.cfg.Issuer+": "+err.Error())
		return
	}
	raw, _ := t.Extra("id_token").(string)
	if raw == "" {
		fail(http.StatusBadGateway, "the provider sent no ID token: is openid in oidc.scopes?")
		return
	}
	tok, err := o.idToken(r.Context(), raw)
	if err != nil {
		fail(http.StatusUnauthorized, err.Error())
		return
	}
	if subtle.ConstantTimeCompare([]byte(tok.Nonce), []byte(f.Nonce)) != 1 {
		fail(http.StatusUnauthorized, "the ID token's nonce does not match this browser's sign-in")
		return
	}
	s, err := o.subject(tok)
	if err != nil {
		fail(http.StatusUnauthorized, err.Error())
		return
	}
	exp := time.Now().Add(o.cfg.SessionLifetime)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: o.seal("session", session{Name: s.Name, Groups: s.Groups, Issuer: o.cfg.Issuer, Expires: exp.Unix()}),
		Path: "/", Expires: exp, MaxAge: int(o.cfg.SessionLifetime / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: o.secure(r)})
	o.log.Info("signed in to the web UI", "user", s.Name, "groups", s.Groups, "remote", r.RemoteAddr)
	next := f.Next
	if next == "" {
		next = "/"
	}
	http.Redirect(w, r, next, http.StatusFound)
}

// logout ends the web session in this browser.
func (o *oidcAuth) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: o.secure(r)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// localPath keeps a post-sign-in destination on this registry: a path,
// never another site (//host, /\host).
func localPath(p string) string {
	u, err := url.Parse(p)
	if err != nil || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || u.Host != "" || u.Scheme != "" {
		return ""
	}
	return p
}

func randomString() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// loginURL is where the guard sends an anonymous person whose page needs
// a sign-in: back to the page afterwards.
func loginURL(r *http.Request) string {
	return LoginPath + "?next=" + url.QueryEscape(r.URL.RequestURI())
}
