// Package client is modelreg's entry point for Go programs: one Client
// holds what every verb needs (credentials and transport per host, the
// scheme rule, the digest cache and resumable upload state, whether a
// registry is modelreg serve) and offers each verb of the CLI as a method
// returning typed values. The CLI is flags and output formats over it.
//
//	c := client.New(client.DefaultOptions())
//	res, err := c.Push(ctx, "localhost:5000/team/fraud:1.0.0", []string{"./model"}, client.PushOptions{})
package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"time"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/modelapi"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/transfer"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// Options configures a Client. The zero value works; DefaultOptions fills
// in what a user's machine provides (cache directory, actor).
type Options struct {
	// Remote holds credentials and transport settings for every registry.
	Remote remote.Options
	// CacheDir keeps the digest cache (digests.json) and resumable upload
	// state (uploads/); "" disables both.
	CacheDir string
	// Progress receives transfer progress; nil discards it.
	Progress progress.Reporter
	// Actor names who promotes or evaluates, in records; "" is
	// DefaultActor().
	Actor string
}

// DefaultOptions are the options of the modelreg CLI: the user's cache
// directory and default actor, credentials from the docker/oras store.
func DefaultOptions() Options {
	return Options{CacheDir: DefaultCacheDir(), Actor: DefaultActor(), Remote: remote.Options{UserAgent: "modelreg"}}
}

// DefaultCacheDir is modelreg's per-user cache ($XDG_CACHE_HOME/modelreg,
// or ~/.cache/modelreg).
func DefaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "modelreg")
}

// DefaultActor names who acts: $MODELREG_ACTOR, else user@host.
func DefaultActor() string {
	if a := os.Getenv("MODELREG_ACTOR"); a != "" {
		return a
	}
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// Client runs modelreg's verbs against OCI registries. It is safe for
// concurrent use.
type Client struct {
	opts Options

	mu  sync.Mutex
	api map[string]*modelapi.Client // per host; nil when the host is not modelreg serve
}

// New makes a Client.
func New(opts Options) *Client {
	if opts.Progress == nil {
		opts.Progress = progress.Discard()
	}
	if opts.Actor == "" {
		opts.Actor = DefaultActor()
	}
	return &Client{opts: opts, api: map[string]*modelapi.Client{}}
}

// ErrUsage marks an error in what the caller asked (a malformed reference,
// a bad option), as opposed to a failure talking to a registry: the CLI
// exits 2 for it. Test with errors.Is.
var ErrUsage = errors.New("usage error")

type usageError struct{ error }

func (usageError) Is(target error) bool { return target == ErrUsage }
func (e usageError) Unwrap() error      { return e.error }

func usage(err error) error { return usageError{err} }

// ErrNoServer means a verb needs modelreg serve and the registry is another.
var ErrNoServer = modelapi.ErrNoServer

// Repository parses ref (REGISTRY/REPO[:TAG|@DIGEST]) and connects to its
// repository.
func (c *Client) Repository(ref string) (registry.Reference, *orasremote.Repository, error) {
	r, err := remote.ParseReference(ref)
	if err != nil {
		return r, nil, usage(err)
	}
	repo, err := c.opts.Remote.Repository(r)
	return r, repo, err
}

// versionRepository is Repository for a reference that must name one
// version: a tag or a digest.
func (c *Client) versionRepository(ref string) (registry.Reference, *orasremote.Repository, error) {
	r, repo, err := c.Repository(ref)
	if err == nil && r.Reference == "" {
		return r, nil, usage(fmt.Errorf("%s names a repository, not a version: add a version (%s:1.4.0), a stage (%s:production) or a digest (%s@sha256:…); `modelreg list %s` shows them", ref, ref, ref, ref, ref))
	}
	return r, repo, err
}

// Version reads the model version ref names (its manifest digest verified).
func (c *Client) Version(ctx context.Context, ref string) (registry.Reference, *orasremote.Repository, *model.Version, error) {
	r, repo, err := c.versionRepository(ref)
	if err != nil {
		return r, nil, nil, err
	}
	v, err := transfer.Fetch(ctx, repo, r)
	return r, repo, v, err
}

// Server returns the model API client of host when host is modelreg serve,
// else ErrNoServer; the answer is kept for the Client's life.
func (c *Client) Server(ctx context.Context, host string) (*modelapi.Client, error) {
	c.mu.Lock()
	api, known := c.api[host]
	c.mu.Unlock()
	if known {
		if api == nil {
			return nil, fmt.Errorf("%s: %w", host, ErrNoServer)
		}
		return api, nil
	}
	api, err := modelapi.New(ctx, c.opts.Remote, host)
	if err != nil && !errors.Is(err, modelapi.ErrNoServer) {
		return nil, err
	}
	c.mu.Lock()
	c.api[host] = api
	c.mu.Unlock()
	return api, err
}

func (c *Client) cachePath(name string) string {
	if c.opts.CacheDir == "" {
		return ""
	}
	return filepath.Join(c.opts.CacheDir, name)
}

func parseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339, s) }
