package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/modelreg/modelreg/pkg/wire"
)

// EventTypePrefix starts every CloudEvents type modelreg emits; a
// subscription may name types with or without it.
const EventTypePrefix = "dev.modelreg."

// Events configures event delivery.
type Events struct {
	// Source is the CloudEvents source of every event: a URI naming this
	// registry as receivers know it (e.g. https://registry.example.com).
	// The default, /modelreg/<server key id>, is stable for the registry's
	// life but says nothing about where it runs.
	Source string `yaml:"source"`
	// Keep is how long events and their delivery log are kept (default
	// 720h, 30 days).
	Keep          time.Duration  `yaml:"keep"`
	Subscriptions []Subscription `yaml:"subscriptions"`
	// CAFile is a PEM bundle of certificate authorities trusted beside the
	// system pool for https receivers, whose certificates a private CA
	// often signs inside a company.
	CAFile string `yaml:"caFile"`

	rootCAs *x509.CertPool
}

// RootCAs is the pool that verifies receivers' certificates: the system
// pool with CAFile's certificates added, or nil (the system pool) when
// CAFile is empty. check builds it.
func (e Events) RootCAs() *x509.CertPool { return e.rootCAs }

// Subscription is one receiver of events.
type Subscription struct {
	// Name identifies the subscription in the delivery log; it must be
	// unique and stable (renaming starts a new subscription, which sees
	// only events from then on).
	Name string `yaml:"name"`
	// URL receives each event as an HTTP POST (CloudEvents structured
	// mode).
	URL string `yaml:"url"`
	// Types are the event types sent (e.g. stage.moved); empty sends all.
	Types []string `yaml:"types"`
	// Repositories are repository patterns (team/* one segment, team/**
	// any depth); empty sends events of every repository.
	Repositories []string `yaml:"repositories"`
	// Secret signs every delivery (HMAC-SHA256). SecretFile or SecretEnv
	// keep it out of the configuration file; exactly one is required, as
	// an unsigned event could be forged by anyone who can reach the
	// receiver.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secretFile"`
	SecretEnv  string `yaml:"secretEnv"`
	// MaxAttempts bounds the deliveries of one event (default 12); after
	// the last failure the delivery is dead (kept in the log, not retried).
	MaxAttempts int `yaml:"maxAttempts"`
	// Backoff is the wait after the first failure, doubled after each
	// (default 2s, at most 1h between attempts).
	Backoff time.Duration `yaml:"backoff"`
	// Timeout bounds one delivery (default 10s).
	Timeout time.Duration `yaml:"timeout"`

	secret []byte
}

// Key returns the subscription's signing secret, read by check.
func (s Subscription) Key() []byte { return s.secret }

// Wants reports whether the subscription receives an event of type typ
// (with or without EventTypePrefix) about repository repo.
func (s Subscription) Wants(typ, repo string) bool {
	typ = strings.TrimPrefix(typ, EventTypePrefix)
	if len(s.Types) > 0 {
		ok := false
		for _, t := range s.Types {
			if strings.TrimPrefix(t, EventTypePrefix) == typ {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(s.Repositories) == 0 {
		return true
	}
	for _, p := range s.Repositories {
		if ok, _ := doublestar.Match(p, repo); ok {
			return true
		}
	}
	return false
}

func (e *Events) check() error {
	if e.Keep == 0 {
		e.Keep = 720 * time.Hour
	}
	if e.Keep < 0 {
		return errors.New("events.keep must be a positive duration")
	}
	if e.Source != "" {
		if _, err := url.Parse(e.Source); err != nil {
			return fmt.Errorf("events.source %q: expected a URI: %v", e.Source, err)
		}
	}
	if e.CAFile != "" {
		b, err := os.ReadFile(e.CAFile)
		if err != nil {
			return fmt.Errorf("events.caFile: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("events.caFile %s holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", e.CAFile)
		}
		e.rootCAs = pool
	}
	seen := map[string]bool{}
	for i := range e.Subscriptions {
		s := &e.Subscriptions[i]
		where := fmt.Sprintf("events.subscriptions[%d]", i)
		if s.Name == "" {
			return fmt.Errorf("%s: a subscription needs a name (it keys the delivery log)", where)
		}
		where = fmt.Sprintf("events subscription %q", s.Name)
		if seen[s.Name] {
			return fmt.Errorf("%s: the name is used twice; names must be unique", where)
		}
		seen[s.Name] = true
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s: url %q: expected an http or https URL", where, s.URL)
		}
		for _, t := range s.Types {
			if !knownType(t) {
				return fmt.Errorf("%s: unknown event type %q; known: %s", where, t, shortTypes())
			}
		}
		for _, p := range s.Repositories {
			if !doublestar.ValidatePattern(p) {
				return fmt.Errorf("%s: invalid repository pattern %q (team/* is one path segment, team/** any depth)", where, p)
			}
		}
		n := 0
		for _, v := range []string{s.Secret, s.SecretFile, s.SecretEnv} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: give exactly one of secret, secretFile or secretEnv: every delivery is signed, so a receiver can tell it came from this registry", where)
		}
		switch {
		case s.Secret != "":
			s.secret = []byte(s.Secret)
		case s.SecretFile != "":
			b, err := os.ReadFile(s.SecretFile)
			if err != nil {
				return fmt.Errorf("%s: secretFile: %w", where, err)
			}
			s.secret = []byte(strings.TrimSpace(string(b)))
		default:
			s.secret = []byte(os.Getenv(s.SecretEnv))
		}
		if len(s.secret) < 16 {
			return fmt.Errorf("%s: the secret is %d bytes; use at least 16 (e.g. openssl rand -hex 32)", where, len(s.secret))
		}
		if s.MaxAttempts == 0 {
			s.MaxAttempts = 12
		}
		if s.MaxAttempts < 0 {
			return fmt.Errorf("%s: maxAttempts must be positive", where)
		}
		if s.Backoff == 0 {
			s.Backoff = 2 * time.Second
		}
		if s.Timeout == 0 {
			s.Timeout = 10 * time.Second
		}
		if s.Backoff < 0 || s.Timeout < 0 {
			return errors.New(where + ": backoff and timeout must be positive durations")
		}
	}
	return nil
}

func knownType(t string) bool {
	return slices.Contains(wire.EventTypes, EventTypePrefix+strings.TrimPrefix(t, EventTypePrefix))
}

func shortTypes() string {
	var s []string
	for _, t := range wire.EventTypes {
		s = append(s, strings.TrimPrefix(t, EventTypePrefix))
	}
	return strings.Join(s, ", ")
}
