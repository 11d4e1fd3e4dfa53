package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/tag"
)

// Deleted is what Delete removed.
type Deleted struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
}

// Delete deletes the version ref from modelreg serve, which records it
// first: a signed tombstone (who, when, the version tags, the manifest's
// bytes) and the version tags retired for good; it refuses a version a
// stage points at, or that ever was in a protected stage. On another
// registry a deletion would leave no record, so Delete refuses it. A
// stage is not deleted this way: empty it by promotion.
func (c *Client) Delete(ctx context.Context, ref, reason string) (*Deleted, error) {
	r, _, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	if tag.Classify(r.Reference) == tag.Stage {
		return nil, usage(fmt.Errorf("%s is a stage, not a version: delete the version it points at by its tag or digest (a version in a stage is not deleted)", ref))
	}
	if _, err := c.Server(ctx, r.Registry); err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: a deletion there would leave no record of what was deleted, so modelreg does not make it; use the registry's own tools if you must", r.Registry)
	}
	ro := c.opts.Remote
	ro.Header = http.Header{}
	ro.Header.Set(mediatypes.HeaderActor, c.opts.Actor)
	if reason != "" {
		ro.Header.Set(mediatypes.HeaderReason, reason)
	}
	repo, err := ro.Repository(r)
	if err != nil {
		return nil, err
	}
	if err := repo.Delete(ctx, v.Descriptor); err != nil {
		return nil, remote.Explain(err, ref)
	}
	return &Deleted{Reference: ref, Digest: v.Descriptor.Digest.String()}, nil
}
