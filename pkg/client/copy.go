package client

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
)

// CopyResult is what a copy did.
type CopyResult struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Digest      string `json:"digest"`
	// Copied and Skipped count the manifests and blobs sent, and those the
	// destination had already (a second run copies only what is new).
	Copied  int `json:"copied"`
	Skipped int `json:"skipped"`
	// Bytes is what was sent.
	Bytes int64 `json:"bytes"`
	// LegacyTags are cosign's sha256-<hex>.sig/.att tags copied along.
	LegacyTags []string `json:"legacyTags,omitempty"`
}

// Copy copies the version src (REGISTRY/REPO:TAG or @DIGEST) to dst
// (REGISTRY/REPO, or REGISTRY/REPO:TAG to tag it otherwise), between any
// two registries: its manifest and blobs, and every referrer, recursively
// (signatures, attestations, lineage, evaluations, promotion records, an
// image view), and cosign's legacy .sig and .att tags, keeping every
// digest, so signatures verify at the destination. Blobs the destination
// has are not sent again. A version tag is written (the source's when dst
// names none); stages are not: they move only by promotion, through the
// destination's gate. Promotion records arrive as the source's history:
// modelreg serve keeps them as records it did not sign, outside its own
// chain.
func (c *Client) Copy(ctx context.Context, src, dst string) (*CopyResult, error) {
	sr, srepo, v, err := c.Version(ctx, src)
	if err != nil {
		return nil, err
	}
	dr, drepo, err := c.Repository(dst)
	if err != nil {
		return nil, err
	}
	dstTag := dr.Reference
	if dstTag == "" {
		if tag.Classify(sr.Reference) != tag.Version {
			return nil, usage(fmt.Errorf("%s names no version tag to copy; name one on the destination, e.g. %s/%s:1.4.0 (stages are not copied: promote at the destination)", src, dr.Registry, dr.Repository))
		}
		dstTag = sr.Reference
	}
	if _, err := dr.Digest(); err == nil {
		return nil, usage(fmt.Errorf("the destination %s names a digest: give a repository, optionally with a version tag", dst))
	}
	if err := tag.ValidateVersion(dstTag); err != nil {
		return nil, usage(fmt.Errorf("the destination tag: %w (stages move only by promotion, at the destination)", err))
	}
	res := &CopyResult{Source: src, Digest: v.Descriptor.Digest.String(), Destination: fmt.Sprintf("%s/%s:%s", dr.Registry, dr.Repository, dstTag)}
	var copied, skipped atomic.Int64
	var bytes atomic.Int64
	opts := oras.ExtendedCopyOptions{ExtendedCopyGraphOptions: oras.DefaultExtendedCopyGraphOptions}
	opts.PostCopy = func(_ context.Context, d ocispec.Descriptor) error {
		copied.Add(1)
		bytes.Add(d.Size)
		return nil
	}
	opts.OnCopySkipped = func(context.Context, ocispec.Descriptor) error {
		skipped.Add(1)
		return nil
	}
	if _, err := oras.ExtendedCopy(ctx, srepo, v.Descriptor.Digest.String(), drepo, v.Descriptor.Digest.String(), opts); err != nil {
		return nil, fmt.Errorf("copying %s to %s: %w", v.Descriptor.Digest, dr.Repository, remote.Explain(err, dst))
	}
	// cosign's legacy signatures and attestations hang on tags, not on the
	// subject: copy them by name.
	for _, t := range []string{signature.LegacyTag(v.Descriptor.Digest), signature.LegacyAttestationTag(v.Descriptor.Digest)} {
		if _, err := srepo.Resolve(ctx, t); err != nil {
			continue
		}
		if _, err := oras.Copy(ctx, srepo, t, drepo, t, oras.CopyOptions{CopyGraphOptions: opts.CopyGraphOptions}); err != nil {
			return nil, fmt.Errorf("copying %s: %w", t, remote.Explain(err, dst))
		}
		res.LegacyTags = append(res.LegacyTags, t)
	}
	if err := drepo.Tag(ctx, v.Descriptor, dstTag); err != nil {
		return nil, fmt.Errorf("tagging %s at the destination: %w", dstTag, remote.Explain(err, dst))
	}
	res.Copied, res.Skipped, res.Bytes = int(copied.Load()), int(skipped.Load()), bytes.Load()
	return res, nil
}
