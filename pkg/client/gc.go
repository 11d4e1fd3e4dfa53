package client

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/wire"
)

// GCOptions says what GC asks of the server.
type GCOptions struct {
	// DryRun reports what would go and changes nothing.
	DryRun bool
	// Repositories, a pattern (team/* one segment, team/** any depth),
	// limits which repositories' versions retention may delete.
	Repositories string
}

// GC asks modelreg serve at host (REGISTRY, e.g. localhost:5000) to apply
// its retention rules, each deletion recorded with a signed tombstone,
// and to collect the blobs nothing refers to any more, while it keeps
// serving. Only modelreg serve has rules and an online collector: on
// another registry GC fails with ErrNoServer.
func (c *Client) GC(ctx context.Context, host string, o GCOptions) (*wire.GCReport, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://"), "/")
	if host == "" || strings.Contains(host, "/") {
		return nil, usage(fmt.Errorf("%q: name a registry (HOST[:PORT], e.g. localhost:5000), not a repository: use --repo PATTERN to limit retention to repositories", host))
	}
	api, err := c.Server(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: retention and online garbage collection are modelreg serve's; on distribution run `registry garbage-collect` with the registry stopped (%w)", host, err)
	}
	h := http.Header{}
	h.Set(mediatypes.HeaderActor, c.opts.Actor)
	rep, err := api.GC(ctx, wire.GCRequest{DryRun: o.DryRun, Repositories: o.Repositories}, h)
	if err != nil {
		return nil, err
	}
	return &rep, nil
}

// Takedown takes the version ref down from modelreg serve: an admin's
// deletion (serve --admin-user) for legal or personal-data reasons, which
// also applies to a version that was in a protected stage. The server
// writes a signed tombstone with the manifest embedded (the history still
// says what ran), deletes the version and removes its blobs at once,
// except those another version shares (reported). A version a stage
// points at is refused: move the stage first.
func (c *Client) Takedown(ctx context.Context, ref, reason string) (*wire.Takedown, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, usage(fmt.Errorf("a takedown needs --reason: the tombstone is all the history keeps of the version"))
	}
	r, _, err := c.versionRepository(ref)
	if err != nil {
		return nil, err
	}
	if tag.Classify(r.Reference) == tag.Stage {
		return nil, usage(fmt.Errorf("%s is a stage, not a version: move the stage off the version (promote or rollback), then take the version down by its tag or digest", ref))
	}
	api, err := c.Server(ctx, r.Registry)
	if err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: a takedown there would leave no record of what was removed, so modelreg does not make it", r.Registry)
	}
	h := http.Header{}
	h.Set(mediatypes.HeaderActor, c.opts.Actor)
	t, err := api.Takedown(ctx, r.Repository, r.Reference, reason, h)
	if err != nil {
		return nil, err
	}
	return &t, nil
}
