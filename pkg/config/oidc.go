package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// OIDC lets people sign in with an OpenID Connect provider (Keycloak,
// Dex, Okta, Entra ID, Google, ZITADEL …) instead of an htpasswd entry:
// the provider's ID tokens are accepted at the token endpoint and as
// basic credentials (user "oidc", the token as password), and the web UI
// signs people in with the authorization code flow. Who may do what is
// still the access policy's to decide, so OIDC needs one (docs/access.md).
type OIDC struct {
	// Issuer is the provider's issuer URL, exactly as its discovery
	// document (ISSUER/.well-known/openid-configuration) names it.
	Issuer string `yaml:"issuer"`
	// ClientID is this registry's client at the provider: the audience
	// its ID tokens must carry, and the client of the web UI's sign-in.
	ClientID string `yaml:"clientID"`
	// ClientSecret authenticates the web UI's code exchange; give it in
	// the file (ClientSecret), in a file (ClientSecretFile) or in an
	// environment variable (ClientSecretEnv), or none for a public client
	// (the exchange is still bound to the sign-in by PKCE).
	ClientSecret     string `yaml:"clientSecret"`
	ClientSecretFile string `yaml:"clientSecretFile"`
	ClientSecretEnv  string `yaml:"clientSecretEnv"`
	// Audiences, when set, replace ClientID as the audiences accepted in
	// ID tokens: for tokens a CLI obtains with a client of its own.
	// ClientID stays the web UI's client and must be one of them.
	Audiences []string `yaml:"audiences"`
	// UsernameClaim names the claim that becomes the user's name (the
	// NAME of user:NAME in the access policy). Default
	// preferred_username, then email (when the provider does not say it
	// is unverified), then sub, whichever the token has first; a claim
	// set here must be in every token.
	UsernameClaim string `yaml:"usernameClaim"`
	// UsernamePrefix is put before every name from the provider
	// ("oidc:" makes user:oidc:alice), so a provider whose users choose
	// their names cannot mint the name of an htpasswd user or a rule's
	// user.
	UsernamePrefix string `yaml:"usernamePrefix"`
	// GroupsClaim names the claim listing the user's groups (a list of
	// strings, or one string), matched by group:NAME subjects in the
	// access policy; default "groups". A token without it has no groups.
	GroupsClaim string `yaml:"groupsClaim"`
	// GroupsPrefix is put before every group from the provider, for the
	// same reason as UsernamePrefix.
	GroupsPrefix string `yaml:"groupsPrefix"`
	// Scopes are asked for at the web UI's sign-in; default openid,
	// profile and email (some providers, e.g. Dex, send groups only when
	// the "groups" scope is asked for too). openid is always asked.
	Scopes []string `yaml:"scopes"`
	// RedirectURL is the web UI's callback as the provider knows it
	// (https://registry.example.com/ui/callback). Default: /ui/callback
	// on the scheme and host of the request that started the sign-in,
	// which is right unless a proxy rewrites them.
	RedirectURL string `yaml:"redirectURL"`
	// SessionLifetime bounds a web UI session (default 8h): then the
	// user signs in again, and a changed group membership takes effect.
	SessionLifetime time.Duration `yaml:"sessionLifetime"`

	secret string
}

// Secret returns the client secret, read by check ("" for a public
// client).
func (o *OIDC) Secret() string { return o.secret }

// AcceptedAudiences are the audiences an ID token may be issued for.
func (o *OIDC) AcceptedAudiences() []string {
	if len(o.Audiences) > 0 {
		return o.Audiences
	}
	return []string{o.ClientID}
}

// check validates the oidc: section (nil: no OIDC) and fills in its
// defaults.
func (o *OIDC) check() error {
	if o == nil {
		return nil
	}
	u, err := url.Parse(o.Issuer)
	if o.Issuer == "" || err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("oidc.issuer %q: give the provider's issuer URL (https://…), as its /.well-known/openid-configuration names it", o.Issuer)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return fmt.Errorf("oidc.issuer %q: a provider's keys must come over https (http only on loopback, for tests)", o.Issuer)
	}
	if o.ClientID == "" {
		return fmt.Errorf("oidc.clientID is required: the client this registry is registered as at %s (the audience of its ID tokens)", o.Issuer)
	}
	if len(o.Audiences) > 0 {
		found := false
		for _, a := range o.Audiences {
			if a == "" {
				return fmt.Errorf("oidc.audiences: an empty audience")
			}
			found = found || a == o.ClientID
		}
		if !found {
			return fmt.Errorf("oidc.audiences %v does not include oidc.clientID %q: the web UI's sign-in gets tokens for the client ID", o.Audiences, o.ClientID)
		}
	}
	n := 0
	for _, v := range []string{o.ClientSecret, o.ClientSecretFile, o.ClientSecretEnv} {
		if v != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return fmt.Errorf("oidc: give at most one of clientSecret, clientSecretFile or clientSecretEnv")
	case o.ClientSecret != "":
		o.secret = o.ClientSecret
	case o.ClientSecretFile != "":
		b, err := os.ReadFile(o.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("oidc.clientSecretFile: %w", err)
		}
		o.secret = strings.TrimSpace(string(b))
	case o.ClientSecretEnv != "":
		o.secret = os.Getenv(o.ClientSecretEnv)
		if o.secret == "" {
			return fmt.Errorf("oidc.clientSecretEnv: the environment variable %s is empty or unset", o.ClientSecretEnv)
		}
	}
	if o.RedirectURL != "" {
		r, err := url.Parse(o.RedirectURL)
		if err != nil || r.Host == "" || r.Scheme != "https" && r.Scheme != "http" || r.Path != "/ui/callback" {
			return fmt.Errorf("oidc.redirectURL %q: give this registry's callback as the provider knows it, e.g. https://registry.example.com/ui/callback", o.RedirectURL)
		}
	}
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	if o.SessionLifetime == 0 {
		o.SessionLifetime = 8 * time.Hour
	}
	if o.SessionLifetime < time.Minute {
		return fmt.Errorf("oidc.sessionLifetime %s: give at least 1m (e.g. 8h)", o.SessionLifetime)
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{"openid", "profile", "email"}
	}
	hasOpenID := false
	for _, s := range o.Scopes {
		hasOpenID = hasOpenID || s == "openid"
	}
	if !hasOpenID {
		o.Scopes = append([]string{"openid"}, o.Scopes...)
	}
	return nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}
