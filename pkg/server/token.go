package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
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
