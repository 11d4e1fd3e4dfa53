package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/modelreg/modelreg/pkg/access"
)

// TokenPath is the token endpoint (the realm of the Bearer challenge):
// where docker, oras, crane, cosign, containerd and skopeo exchange
// credentials for a short-lived token, as the Docker registry token
// specification describes.
const TokenPath = "/auth/token"

// tokenIssuer signs and verifies the registry's bearer tokens (JWT,
// EdDSA). The key is kept with the data, so tokens survive a restart.
type tokenIssuer struct {
	key      ed25519.PrivateKey
	service  string
	lifetime time.Duration
}

// scopeGrant is one entry of a token's "access" claim.
type scopeGrant struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// tokenClaims are a token's claims: the standard ones, the subject's
// groups (from the identity provider) and the repository scopes granted.
type tokenClaims struct {
	jwt.RegisteredClaims
	Groups []string     `json:"groups,omitempty"`
	Access []scopeGrant `json:"access"`
}

func loadTokenKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: not a PEM key; move it away to make a new one (tokens issued with it stop working)", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an Ed25519 key", path)
		}
		return ek, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Clean(path)); err != nil {
		return nil, err
	}
	return k, nil
}

// issue signs a token for s with the scopes granted.
func (ti *tokenIssuer) issue(s access.Subject, scopes []scopeGrant, now time.Time) (string, error) {
	jti := make([]byte, 12)
	rand.Read(jti)
	if scopes == nil {
		scopes = []scopeGrant{}
	}
	c := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "modelreg", Subject: s.String(), Audience: jwt.ClaimStrings{ti.service},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(ti.lifetime)), ID: hex.EncodeToString(jti),
		},
		Groups: s.Groups, Access: scopes,
	}
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(ti.key)
}

// verify checks a token's signature, algorithm, issuer, audience and
// times, and returns its subject and scopes.
func (ti *tokenIssuer) verify(raw string, now time.Time) (access.Subject, []scopeGrant, error) {
	var c tokenClaims
	_, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return ti.key.Public(), nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithIssuer("modelreg"), jwt.WithAudience(ti.service),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return access.Subject{}, nil, err
	}
	s, err := parseSubject(c.Subject)
	if err != nil {
		return access.Subject{}, nil, err
	}
	s.Groups = c.Groups
	return s, c.Access, nil
}

func parseSubject(v string) (access.Subject, error) {
	if v == "anonymous" {
		return access.Anonymous, nil
	}
	kind, name, ok := strings.Cut(v, ":")
	if !ok || name == "" || kind != access.KindUser && kind != access.KindRobot {
		return access.Subject{}, fmt.Errorf("token subject %q", v)
	}
	return access.Subject{Kind: kind, Name: name}, nil
}

// parseScope reads one scope of a token request: repository:NAME:ACTIONS
// (the name may contain colons only before the last one).
func parseScope(s string) (scopeGrant, bool) {
	typ, rest, ok := strings.Cut(s, ":")
	if !ok {
		return scopeGrant{}, false
	}
	i := strings.LastIndex(rest, ":")
	if i < 0 {
		return scopeGrant{}, false
	}
	name, actions := rest[:i], strings.Split(rest[i+1:], ",")
	return scopeGrant{Type: typ, Name: name, Actions: actions}, name != ""
}

// covers reports whether a token's scopes grant action on repository repo.
func covers(scopes []scopeGrant, repo, action string) bool {
	for _, g := range scopes {
		if g.Type == "repository" && g.Name == repo && (slices.Contains(g.Actions, action) || slices.Contains(g.Actions, "*")) {
			return true
		}
	}
	return false
}

// tokenAnswer is the token endpoint's answer, in both spellings clients
// read (token: docker's; access_token: OAuth 2).
type tokenAnswer struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// token is the token endpoint: GET with basic credentials (or none, for
// what anonymous clients may do) and ?service=&scope=…, or POST with an
// OAuth 2 password grant (containerd, docker with an identity token
// configured). It grants, of each scope asked, what the subject may do:
// pull; push for any write right (the router decides the exact right of
// each write); delete; * for admins. A request for more is not refused:
// the token carries less, and the registry answers 403 where it falls
// short, which tells a client more than a failed login would.
func (g *guard) token(w http.ResponseWriter, r *http.Request) {
	var scopes []string
	var id *identity
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		if s := q.Get("service"); s != "" && s != g.tokens.service {
			serveError(w, errDenied, fmt.Sprintf("this registry's token service is %q, not %q", g.tokens.service, s))
			return
		}
		scopes = q["scope"]
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") && g.oidc != nil {
			s, err := g.oidc(r.Context(), strings.TrimPrefix(h, "Bearer "))
			if err != nil {
				g.challenge(w, r, "", "the ID token was refused: "+err.Error())
				return
			}
			id = &identity{subject: s, policy: g.policy()}
			break
		}
		var status int
		var msg string
		if id, status, msg = g.identify(r); status != 0 {
			if status == http.StatusTooManyRequests {
				serveError(w, errTooMany, msg)
				return
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="modelreg"`)
			serveError(w, errUnauthorized, msg)
			return
		}
		if id.scopes != nil {
			serveError(w, errDenied, "a registry token cannot be exchanged for another: send credentials")
			return
		}
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			serveError(w, errUnsupported, "a token request's form does not parse: "+err.Error())
			return
		}
		if gt := r.PostForm.Get("grant_type"); gt != "password" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"unsupported_grant_type","error_description":"grant_type %q: this registry takes password grants (user or robot credentials)"}`, gt)
			return
		}
		scopes = strings.Fields(r.PostForm.Get("scope"))
		s, grant, status, msg := g.login(r, r.PostForm.Get("username"), r.PostForm.Get("password"))
		if status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": msg})
			return
		}
		id = &identity{subject: s, robot: grant, policy: g.policy()}
	default:
		w.Header().Set("Allow", "GET, POST")
		serveError(w, errUnsupported, "the token endpoint takes GET and POST")
		return
	}
	var granted []scopeGrant
	for _, raw := range scopes {
		for _, one := range strings.Fields(raw) {
			sg, ok := parseScope(one)
			if !ok {
				continue
			}
			var acts []string
			switch sg.Type {
			case "repository":
				for _, a := range sg.Actions {
					ok := false
					switch a {
					case "pull":
						ok = id.may(sg.Name, access.Pull)
					case "push":
						ok = id.mayWrite(sg.Name)
					case "delete":
						ok = id.may(sg.Name, access.Delete)
					case "*":
						ok = id.may(sg.Name, access.Admin)
					}
					if ok && !slices.Contains(acts, a) {
						acts = append(acts, a)
					}
				}
			case "registry":
				if sg.Name == "catalog" && id.subject.Kind != access.KindAnonymous {
					acts = []string{"*"}
				}
			}
			if len(acts) > 0 {
				granted = append(granted, scopeGrant{Type: sg.Type, Name: sg.Name, Actions: acts})
			}
		}
	}
	now := time.Now()
	tok, err := g.tokens.issue(id.subject, granted, now)
	if err != nil {
		serveError(w, errUnknown, "signing the token: "+err.Error())
		return
	}
	g.log.Debug("token issued", "subject", id.subject.String(), "scopes", granted)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, tokenAnswer{Token: tok, AccessToken: tok, ExpiresIn: int(g.tokens.lifetime / time.Second), IssuedAt: now.UTC().Format(time.RFC3339)})
}
