package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/gorilla/mux"
	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/index"
)

// RobotPrefix starts a robot account's user name ("robot$ci-train"), so
// one login form serves people and robots and a log line tells them apart.
const RobotPrefix = "robot$"

// identity is who a request comes from, once the guard checked its
// credentials, and what it may use.
type identity struct {
	subject access.Subject
	// scopes are a bearer token's repository scopes; nil for basic
	// credentials (which carry the subject's whole rights).
	scopes []scopeGrant
	// robot is a robot account's own grant.
	robot *access.Grant
	// policy is the access policy in force when the request arrived: one
	// request is decided by one policy.
	policy *access.Policy
	// session marks a web UI session (OIDC sign-in), which the page's
	// header offers to end.
	session bool
}

type identityKey struct{}

func identityOf(ctx context.Context) *identity {
	id, _ := ctx.Value(identityKey{}).(*identity)
	return id
}

// may reports whether the identity may do a on repo: the policy's rules
// (and a robot's own grant), within a bearer token's scopes.
func (id *identity) may(repo string, a access.Action) bool {
	repo = modelOf(repo)
	ok := id.policy.Allowed(id.subject, repo, a) || id.robot != nil && id.robot.Allows(repo, a)
	if !ok || id.scopes == nil {
		return ok
	}
	return id.scoped(repo, a)
}

// scoped reports whether a bearer token's scopes cover a on repo:
// standard clients ask for pull and push, so pull covers reads and push
// (or delete, or *) every write. A token for one repository is no use
// on another.
func (id *identity) scoped(repo string, a access.Action) bool {
	names := []string{repo, repo + ViewSuffix, repo + ModelcarSuffix}
	for _, n := range names {
		if a == access.Pull && covers(id.scopes, n, "pull") || covers(id.scopes, n, "push") || covers(id.scopes, n, "*") ||
			a == access.Delete && covers(id.scopes, n, "delete") {
			return true
		}
	}
	return false
}

// mayWrite reports whether the identity has any write right on repo.
func (id *identity) mayWrite(repo string) bool {
	repo = modelOf(repo)
	ok := id.policy.MayWrite(id.subject, repo) || id.robot != nil && id.robot.MayWrite(repo)
	if !ok || id.scopes == nil {
		return ok
	}
	return id.scoped(repo, access.Push)
}

// modelOf is the model repository whose rights a repository has: an image
// view's or a modelcar's are the model's.
func modelOf(repo string) string {
	return strings.TrimSuffix(strings.TrimSuffix(repo, ViewSuffix), ModelcarSuffix)
}

// Allowed reports whether the request's subject may do a on repo. A
// server without an access policy decides with its htpasswd roles, which
// the authenticator applied already: every request it let through may.
func Allowed(ctx context.Context, repo string, a access.Action) bool {
	id := identityOf(ctx)
	return id == nil || id.may(repo, a)
}

// guard authenticates every request of a server with an access policy and
// applies the policy's coarse rule on the registry's routes (pull to
// read a repository, some write right to write to it); the router then
// decides each write's exact right (push, sign, delete, promote:STAGE,
// admin), which only the request's content tells. It also serves the
// token endpoint.
type guard struct {
	users  *authenticator // htpasswd users; nil without a file
	idx    *index.Index
	tokens *tokenIssuer
	policy func() *access.Policy
	next   http.Handler
	log    *slog.Logger
	deny   func(ctx context.Context, r *http.Request, repo string, a access.Action, why string)
	// oidc verifies an identity provider's ID token (nil: no OIDC).
	oidc func(ctx context.Context, raw string) (access.Subject, error)
	// web signs people in to the web UI and reads their sessions (nil:
	// no OIDC).
	web *oidcAuth

	throttle *throttle
	seenMu   sync.Mutex
	seen     map[string]time.Time // robot -> last time RobotUsed was written
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == TokenPath:
		g.token(w, r)
		return
	case g.web != nil && (p == LoginPath || p == CallbackPath || p == LogoutPath):
		g.web.ServeHTTP(w, r)
		return
	}
	id, status, msg := g.identify(r)
	if status != 0 {
		g.log.Warn("credentials refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", msg)
		metricDenials.WithLabelValues("auth", "").Inc()
		if status == http.StatusTooManyRequests {
			serveError(w, errTooMany, msg)
			return
		}
		g.challenge(w, r, "", msg)
		return
	}
	ctx := context.WithValue(r.Context(), identityKey{}, id)
	if id.subject.Kind != access.KindAnonymous {
		ctx = context.WithValue(ctx, userKey{}, id.subject.Member())
	}
	r = r.WithContext(ctx)
	if !g.coarse(w, r, id) {
		return
	}
	g.next.ServeHTTP(w, r)
}

// coarse applies the rule every registry route shares: reading a
// repository needs pull, writing it some write right; /v2/ itself needs
// credentials (clients learn the token realm from its challenge).
func (g *guard) coarse(w http.ResponseWriter, r *http.Request, id *identity) bool {
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		if id.subject.Kind == access.KindAnonymous {
			g.challenge(w, r, "", "authentication required")
			return false
		}
		return true
	}
	var match mux.RouteMatch
	if !distRouter.Match(r, &match) || match.Route == nil {
		return true // the extension's routes decide themselves
	}
	name := match.Vars["name"]
	if name == "" {
		return true // the catalog: filtered by the router
	}
	if m := referrersRE.FindStringSubmatch(p); m != nil {
		name = m[1]
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if read && id.may(name, access.Pull) || !read && id.mayWrite(name) {
		if q := r.URL.Query(); !read && match.Route.GetName() == v2.RouteNameBlobUpload && q.Get("from") != "" && !id.may(q.Get("from"), access.Pull) {
			// A cross-repository mount reads the source repository.
			g.refuse(w, r, id, q.Get("from"), access.Pull, "a cross-repository mount needs pull on the source repository "+q.Get("from"))
			return false
		}
		return true
	}
	a := access.Pull
	if !read {
		a = access.Push
	}
	g.refuse(w, r, id, name, a, "")
	return false
}

// refuse answers a request the policy does not allow: anonymous clients
// are challenged (they may have credentials to offer), others denied;
// either way the refusal is recorded.
func (g *guard) refuse(w http.ResponseWriter, r *http.Request, id *identity, repo string, a access.Action, why string) {
	if why == "" {
		why = fmt.Sprintf("%s may not %s %s", id.subject, a, repo)
		if id.scopes != nil && (id.policy.Allowed(id.subject, modelOf(repo), a) || id.robot != nil && id.robot.Allows(modelOf(repo), a)) {
			why = fmt.Sprintf("the token was not issued for %s %s: ask the token endpoint for that scope", a, repo)
		}
	}
	g.deny(r.Context(), r, repo, a, why)
	if id.subject.Kind == access.KindAnonymous {
		g.challenge(w, r, scopeFor(repo, a), why)
		return
	}
	serveError(w, errDenied, why)
}

func scopeFor(repo string, a access.Action) string {
	if repo == "" {
		return ""
	}
	if a == access.Pull {
		return "repository:" + repo + ":pull"
	}
	return "repository:" + repo + ":pull,push"
}

// challenge answers 401: a Bearer challenge naming the token endpoint on
// the registry's routes, Basic on the web UI's pages (a browser cannot
// follow a Bearer challenge; it asks for a user name and password). With
// OIDC, a browser asking for a page is sent to sign in instead, and
// other clients are told where.
func (g *guard) challenge(w http.ResponseWriter, r *http.Request, scope, msg string) {
	if isPage(r.URL.Path) {
		if g.web != nil {
			if (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.Contains(r.Header.Get("Accept"), "text/html") {
				http.Redirect(w, r, loginURL(r), http.StatusFound)
				return
			}
			msg += "; sign in at " + loginURL(r)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="modelreg"`)
	} else {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		c := fmt.Sprintf(`Bearer realm="%s://%s%s",service="%s"`, scheme, r.Host, TokenPath, g.tokens.service)
		if scope != "" {
			c += fmt.Sprintf(`,scope="%s"`, scope)
		}
		w.Header().Set("WWW-Authenticate", c)
	}
	serveError(w, errUnauthorized, msg)
}

// identify reads a request's credentials: a bearer token this registry
// issued, basic credentials (an htpasswd user or a robot account), or
// none (anonymous). status is non-zero when they are refused.
func (g *guard) identify(r *http.Request) (id *identity, status int, msg string) {
	id = &identity{subject: access.Anonymous, policy: g.policy()}
	h := r.Header.Get("Authorization")
	switch {
	case h == "" && g.web != nil && isPage(r.URL.Path):
		// A web session counts on the UI's pages only: on /v2/ a cookie
		// another site's request carries must not authorize anything.
		if s, ok := g.web.sessionOf(r); ok {
			id.subject, id.session = s, true
		}
		return id, 0, ""
	case h == "":
		return id, 0, ""
	case strings.HasPrefix(h, "Bearer "):
		s, scopes, err := g.tokens.verify(strings.TrimPrefix(h, "Bearer "), time.Now())
		if err != nil {
			return nil, http.StatusUnauthorized, "invalid or expired token: " + err.Error() + "; get a new one from the realm of the challenge"
		}
		id.subject, id.scopes = s, scopes
		if s.Kind == access.KindRobot {
			// Revocation is checked on every request, not only when the
			// token was issued.
			grant, err := g.robotState(r.Context(), s.Name)
			if err != nil {
				return nil, http.StatusUnauthorized, err.Error()
			}
			id.robot = grant
		}
		return id, 0, ""
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return nil, http.StatusUnauthorized, "unsupported Authorization scheme: use Basic credentials or a Bearer token from " + TokenPath
	}
	s, grant, status, msg := g.login(r, user, pass)
	if status != 0 {
		return nil, status, msg
	}
	id.subject, id.robot = s, grant
	return id, 0, ""
}

// login checks basic credentials: a robot ("robot$NAME" and its
// secret), an identity provider's ID token (user "oidc"), or an htpasswd
// user. Failures count against the client's address (throttle).
func (g *guard) login(r *http.Request, user, pass string) (access.Subject, *access.Grant, int, string) {
	client := clientKey(r.RemoteAddr)
	if name, ok := strings.CutPrefix(user, RobotPrefix); ok {
		if wait := g.throttle.reserve(client); wait > 0 {
			return access.Subject{}, nil, http.StatusTooManyRequests, fmt.Sprintf("too many failed logins from %s; retry in %s", client, wait.Round(time.Second))
		}
		grant, err := g.robotLogin(r.Context(), name, pass)
		g.throttle.done(client, err != nil)
		if err != nil {
			return access.Subject{}, nil, http.StatusUnauthorized, err.Error()
		}
		return access.Subject{Kind: access.KindRobot, Name: name}, grant, 0, ""
	}
	if user == "oidc" && g.oidc != nil {
		s, err := g.oidc(r.Context(), pass)
		if err != nil {
			return access.Subject{}, nil, http.StatusUnauthorized, "the ID token was refused: " + err.Error()
		}
		return s, nil, 0, ""
	}
	if g.users == nil {
		return access.Subject{}, nil, http.StatusUnauthorized, "invalid username or password"
	}
	switch res := g.users.verify(client, user, pass); {
	case res.wait > 0:
		return access.Subject{}, nil, http.StatusTooManyRequests, fmt.Sprintf("too many failed logins from %s; retry in %s", client, res.wait.Round(time.Second))
	case !res.ok:
		return access.Subject{}, nil, http.StatusUnauthorized, "invalid username or password"
	}
	return access.Subject{Kind: access.KindUser, Name: user}, nil, 0, ""
}

// robotLogin checks a robot's secret and state.
func (g *guard) robotLogin(ctx context.Context, name, secret string) (*access.Grant, error) {
	rb, ok, err := g.idx.GetRobot(ctx, name)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(secret))
	want := "sha256:" + hex.EncodeToString(sum[:])
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(rb.SecretHash)) != 1 {
		return nil, fmt.Errorf("invalid robot name or secret")
	}
	return g.robotGrant(ctx, rb)
}

// robotState checks that a robot named by a token still exists and is
// neither revoked nor expired.
func (g *guard) robotState(ctx context.Context, name string) (*access.Grant, error) {
	rb, ok, err := g.idx.GetRobot(ctx, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("robot %q does not exist", name)
	}
	return g.robotGrant(ctx, rb)
}

func (g *guard) robotGrant(ctx context.Context, rb index.Robot) (*access.Grant, error) {
	now := time.Now()
	if !rb.Revoked.IsZero() {
		return nil, fmt.Errorf("robot %q was revoked at %s", rb.Name, rb.Revoked.Format(time.RFC3339))
	}
	if !rb.Expires.IsZero() && now.After(rb.Expires) {
		return nil, fmt.Errorf("robot %q expired at %s; create a new one", rb.Name, rb.Expires.Format(time.RFC3339))
	}
	var grant access.Grant
	if err := json.Unmarshal(rb.Grant, &grant); err != nil {
		return nil, fmt.Errorf("robot %q: %w", rb.Name, err)
	}
	g.seenMu.Lock()
	last := g.seen[rb.Name]
	fresh := now.Sub(last) > time.Minute
	if fresh {
		g.seen[rb.Name] = now
	}
	g.seenMu.Unlock()
	if fresh {
		if err := g.idx.RobotUsed(context.WithoutCancel(ctx), rb.Name, now); err != nil {
			g.log.Warn("noting a robot's use", "robot", rb.Name, "err", err)
		}
	}
	return &grant, nil
}
