package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"
	"golang.org/x/text/language"
)

// provider is a real OpenID Provider (zitadel/oidc's op package) in the
// test process: discovery, keys, the authorization code flow with a login
// form, ID tokens with a groups claim.
type provider struct {
	Issuer string
	st     *opStorage
}

// opStorage is the example in-memory storage of zitadel/oidc with what
// the tests need on top: each user's groups in the ID token, the
// registry's redirect URI (known only once it runs), and an ID token
// lifetime the test can make negative (an expired token, no waiting).
type opStorage struct {
	*storage.Storage
	groups map[string][]string // user ID -> groups

	mu        sync.Mutex
	redirects []string
	lifetime  time.Duration
}

func (s *opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return &opClient{Client: c, s: s}, nil
}

// SetUserinfoFromRequest puts the user's groups into the ID token.
func (s *opStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	if g := s.groups[req.GetSubject()]; g != nil {
		info.AppendClaims("groups", g)
	}
	return nil
}

type opClient struct {
	op.Client
	s *opStorage
}

func (c *opClient) RedirectURIs() []string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return append(c.Client.RedirectURIs(), c.s.redirects...)
}

func (c *opClient) IDTokenLifetime() time.Duration {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.lifetime != 0 {
		return c.s.lifetime
	}
	return c.Client.IDTokenLifetime()
}

// IDTokenUserinfoClaimsAssertion keeps preferred_username in the ID token
// of a code flow (which also issues an access token).
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return true }

type opUsers map[string]*storage.User

func (u opUsers) GetUserByID(id string) *storage.User { return u[id] }
func (u opUsers) GetUserByUsername(name string) *storage.User {
	for _, x := range u {
		if x.Username == name {
			return x
		}
	}
	return nil
}
func (u opUsers) ExampleClientID() string { return "service" }

// cliRedirect is where the test's own sign-ins (standing in for a CLI
// that gets an ID token) are sent back; never requested.
const cliRedirect = "http://127.0.0.1:1/callback"

// startProvider runs the provider on a loopback port until the test ends.
// Users: rita (group release), quinn (no group); password NAME-pw.
// Clients: modelreg (the registry's, secret modelreg-secret) and
// other-app (another application's, for a wrong audience).
func startProvider(t *testing.T) *provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	user := func(id, name string) *storage.User {
		return &storage.User{ID: id, Username: name, Password: name + "-pw", Email: name + "@example.com", EmailVerified: true, PreferredLanguage: language.English}
	}
	users := opUsers{"u-rita": user("u-rita", "rita"), "u-quinn": user("u-quinn", "quinn")}
	clients := map[string]*storage.Client{
		"modelreg":  storage.WebClient("modelreg", "modelreg-secret", cliRedirect),
		"other-app": storage.WebClient("other-app", "other-secret", cliRedirect),
	}
	st := &opStorage{Storage: storage.NewStorageWithClients(users, clients), groups: map[string][]string{"u-rita": {"release", "staff"}}}
	p, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte("modelreg e2e")), CodeMethodS256: true, SupportedUILocales: []language.Tag{language.English}},
		st, op.StaticIssuer(issuer), op.WithAllowInsecure(), op.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// The login form the provider sends people to (its LoginURL):
	// user name and password, then back to the provider's callback.
	mux.HandleFunc("GET /login/username", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<form method="post" action="/login/username"><input type="hidden" name="id" value="%s"><input name="username"><input name="password" type="password"><button>Sign in</button></form>`,
			html.EscapeString(r.URL.Query().Get("authRequestID")))
	})
	mux.Handle("POST /login/username", op.NewIssuerInterceptor(p.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.FormValue("id")
		if err := st.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, op.AuthCallbackURL(p)(r.Context(), id), http.StatusFound)
	}))
	mux.Handle("/", p)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &provider{Issuer: issuer, st: st}
}

// allowRedirect registers the registry's UI callback with the modelreg
// client.
func (p *provider) allowRedirect(u string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.redirects = append(p.st.redirects, u)
}

// loginForm answers the provider's login form as a person would: c is on
// the form's page (resp), and follows the redirects that come after.
func loginForm(t *testing.T, c *http.Client, resp *http.Response, user string) *http.Response {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(body)
	if m == nil || resp.Request.URL.Path != "/login/username" {
		t.Fatalf("expected the provider's login form, got %s %s:\n%s", resp.Request.URL, resp.Status, body)
	}
	form := url.Values{"id": {html.UnescapeString(string(m[1]))}, "username": {user}, "password": {user + "-pw"}}
	u := *resp.Request.URL
	u.RawQuery = ""
	out, err := c.PostForm(u.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// idToken signs user in at the provider with client (the code flow, as
// a CLI would) and returns the ID token issued.
func (p *provider) idToken(t *testing.T, client, secret, user string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host == "127.0.0.1:1" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	cfg := &oauth2.Config{ClientID: client, ClientSecret: secret, RedirectURL: cliRedirect, Scopes: []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{AuthURL: p.Issuer + "/authorize", TokenURL: p.Issuer + "/oauth/token"}}
	resp, err := c.Get(cfg.AuthCodeURL("st", oauth2.SetAuthURLParam("nonce", "n")))
	if err != nil {
		t.Fatal(err)
	}
	resp = loginForm(t, c, resp, user)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("the provider did not send a code back: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("no ID token in the provider's answer")
	}
	return raw
}

// oidcAccessYAML: alice (htpasswd) pushes team/*, the provider's group
// release moves production, anyone signed in reads team/**.
const oidcAccessYAML = `groups:
  ml-team: [alice]
protect: [production]
rules:
  - subjects: [group:ml-team]
    repositories: ["team/*"]
    actions: [push, sign]
  - subjects: [group:release]
    repositories: ["team/**"]
    actions: ["promote:production"]
  - subjects: [authenticated]
    repositories: ["team/**"]
    actions: [pull]
`

// People sign in with a real OIDC provider: its ID tokens at the token
// endpoint and as `-u oidc` credentials (modelreg, oras), the groups
// claim deciding who moves production; expired and wrong-audience tokens
// refused with the reason; the web UI's sign-in (code flow, PKCE, nonce)
// ending in a session that moves production through the UI's form as
// the person, and that counts on no /v2/ route.
func TestOIDC(t *testing.T) {
	idp := startProvider(t)
	e := newEnv(t)
	writeFile(t, filepath.Join(e.dir, "access.yaml"), oidcAccessYAML, 0o644)
	writeFile(t, filepath.Join(e.dir, "config.yaml"), fmt.Sprintf("oidc:\n  issuer: %s\n  clientID: modelreg\n  clientSecret: modelreg-secret\n", idp.Issuer), 0o644)
	reg := startServer(t, "--htpasswd", htpasswdFile(t, "alice"), "--access", filepath.Join(e.dir, "access.yaml"), "--config", filepath.Join(e.dir, "config.yaml"))
	addr := reg.Addr
	idp.allowRedirect("http://" + addr + "/ui/callback")
	repo := addr + "/team/a"
	src := filepath.Join(e.dir, "m")
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		writeFile(t, filepath.Join(src, "model.safetensors"), "weights "+v, 0o644)
		if r := e.exec("", as("alice"), modelregBin, "push", repo+":"+v, src); r.Code != 0 {
			t.Fatalf("alice push %s: %s", v, r.Stderr)
		}
	}
	rita := idp.idToken(t, "modelreg", "modelreg-secret", "rita")
	quinn := idp.idToken(t, "modelreg", "modelreg-secret", "quinn")
	asOIDC := func(tok string) []string { return []string{"MODELREG_USERNAME=oidc", "MODELREG_PASSWORD=" + tok} }

	// (a) The token endpoint takes an ID token as a Bearer credential and
	// grants what the policy gives the user and the token's groups.
	scope := "repository:team/a:pull,push"
	if tok, status := oidcToken(t, addr, rita, scope); status != http.StatusOK || !strings.Contains(claims(t, tok), `"groups":["release","staff"]`) || !strings.Contains(claims(t, tok), `"actions":["pull","push"]`) {
		t.Errorf("rita's token: %d %s", status, claims(t, tok))
	}
	if tok, status := oidcToken(t, addr, quinn, scope); status != http.StatusOK || !strings.Contains(claims(t, tok), `"sub":"user:quinn"`) || !strings.Contains(claims(t, tok), `"actions":["pull"]`) {
		t.Errorf("quinn's token: %d %s", status, claims(t, tok))
	}
	// The group decides who moves production, whatever the client.
	r := e.exec("", asOIDC(quinn), modelregBin, "promote", repo+":1.0.0", "--to", "production")
	if r.Code == 0 || !strings.Contains(r.Stderr, "denied (403)") {
		t.Errorf("quinn (no release group) promoted to production: %d %s", r.Code, r.Stderr)
	}
	if r := e.exec("", nil, orasBin, "tag", "--plain-http", "-u", "oidc", "-p", quinn, repo+":1.0.0", "production"); r.Code == 0 {
		t.Error("oras tag production as quinn was allowed")
	}
	if r := e.exec("", asOIDC(rita), modelregBin, "promote", repo+":1.0.0", "--to", "production"); r.Code != 0 {
		t.Fatalf("rita (group release) promotes to production: %s", r.Stderr)
	}
	if r := e.exec("", nil, orasBin, "tag", "--plain-http", "-u", "oidc", "-p", rita, repo+":2.0.0", "production"); r.Code != 0 {
		t.Errorf("oras tag production as rita: %s", r.Stderr)
	}
	v2 := resolveAs(t, e, "alice", repo+":2.0.0")
	if got := resolveAs(t, e, "alice", repo+":production"); got != v2 {
		t.Errorf("production holds %s after rita's oras tag, want 2.0.0 (%s)", got, v2)
	}

	// (b) Expired and wrong-audience ID tokens are refused, with why.
	idp.st.mu.Lock()
	idp.st.lifetime = -time.Hour
	idp.st.mu.Unlock()
	expired := idp.idToken(t, "modelreg", "modelreg-secret", "rita")
	idp.st.mu.Lock()
	idp.st.lifetime = 0
	idp.st.mu.Unlock()
	other := idp.idToken(t, "other-app", "other-secret", "rita")
	for _, c := range []struct{ name, tok, want string }{
		{"expired", expired, "the ID token expired at"},
		{"wrong audience", other, "the ID token was issued for audience other-app, this registry accepts modelreg"},
	} {
		if body, status := oidcToken(t, addr, c.tok, scope); status != http.StatusUnauthorized || !strings.Contains(body, c.want) {
			t.Errorf("%s ID token at the token endpoint: %d %s", c.name, status, body)
		}
		r := e.exec("", asOIDC(c.tok), modelregBin, "promote", repo+":3.0.0", "--to", "production")
		if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("%s ID token as -u oidc credentials: %d %s", c.name, r.Code, r.Stderr)
		}
	}

	// (c) The web UI's sign-in: an anonymous browser is sent to the
	// provider, signs in, and comes back signed in.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	get := func(u string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if page := readAll(get("http://" + addr + "/")); !strings.Contains(page, `href="/ui/login?next=%2F"`) {
		t.Errorf("the front page offers an anonymous person no sign-in:\n%s", page)
	}
	resp := loginForm(t, browser, get("http://"+addr+"/models/team/a"), "rita")
	page := readAll(resp)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != "http://"+addr+"/models/team/a" || !strings.Contains(page, "signed in as <strong>rita</strong>") || !strings.Contains(page, `action="/ui/logout"`) {
		t.Fatalf("after signing in: %s at %s:\n%s", resp.Status, resp.Request.URL, page)
	}
	var session *http.Cookie
	for _, c := range resp.Request.Response.Cookies() {
		if c.Name == "modelreg_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.MaxAge != 8*3600 {
		t.Errorf("the session cookie: %+v", session)
	}
	// A promotion through the UI's form, as rita, recorded as rita.
	page = readAll(get("http://" + addr + "/models/team/a/promote?stage=production&version=3.0.0"))
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the promote page has no form for rita:\n%s", page)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/models/team/a/promote",
		strings.NewReader(url.Values{"stage": {"production"}, "version": {"3.0.0"}, "csrf": {m[1]}, "reason": {"signed in with OIDC"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://"+addr)
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(resp); resp.StatusCode != http.StatusOK || !strings.Contains(page, "promoted to") {
		t.Fatalf("rita's promotion through the web UI: %s\n%s", resp.Status, page)
	}
	v3 := resolveAs(t, e, "alice", repo+":3.0.0")
	hist := decode[[]promotion.Record](t, e.exec("", as("alice"), modelregBin, "history", repo, "--stage", "production", "--output", "json").Stdout)
	if len(hist) != 3 || hist[0].Actor != "rita" || hist[0].Digest != v3 || hist[0].Reason != "signed in with OIDC" {
		t.Errorf("production's history after the UI's move, newest first, want rita's move to 3.0.0: %+v", hist)
	}

	// (d) The session cookie authorizes nothing on the registry's routes.
	if resp := get("http://" + addr + "/v2/team/a/tags/list"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("tags list with only the session cookie: %s", resp.Status)
	}
	v1 := resolveAs(t, e, "alice", repo+":1.0.0")
	manifest := e.exec("", as("alice"), orasBin, "manifest", "fetch", "--plain-http", "-u", "alice", "-p", "alice-pw", repo+"@"+v1).Stdout
	req, _ = http.NewRequest(http.MethodPut, "http://"+addr+"/v2/team/a/manifests/production", strings.NewReader(manifest))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err = browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a manifest PUT with only the session cookie: %s", resp.Status)
	}
	if got := resolveAs(t, e, "alice", repo+":production"); got != v3 {
		t.Errorf("production moved to %s by a cookie-only PUT", got)
	}

	// Signing out ends the session: the page offers the sign-in again.
	resp, err = browser.PostForm("http://"+addr+"/ui/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(resp); !strings.Contains(page, `href="/ui/login?next=%2F"`) {
		t.Errorf("after signing out:\n%s", page)
	}
}

// oidcToken asks the token endpoint with an ID token as the Bearer
// credential; it returns the registry's token (or the error body).
func oidcToken(t *testing.T, addr, idToken, scope string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/auth/token?"+url.Values{"service": {"modelreg"}, "scope": {scope}}.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(resp)
	var tok struct{ Token string }
	if resp.StatusCode == http.StatusOK && json.Unmarshal([]byte(body), &tok) == nil {
		return tok.Token, resp.StatusCode
	}
	return body, resp.StatusCode
}

// claims is a JWT's payload, as JSON text.
func claims(t *testing.T, jwt string) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "not a JWT: " + jwt
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
