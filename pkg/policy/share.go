package policy

import (
	"context"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
)

// sharedReferrers answers every Referrers call about one subject from a
// single unfiltered listing, filtering by artifactType itself: Gather's
// readers (signatures, bundle attestations, lineage records, evaluations)
// would otherwise list the same subject four times, and on a registry
// without the Referrers API each listing is a fetch of the whole
// referrers-tag index.
type sharedReferrers struct {
	registry.Repository
	subject digest.Digest

	listed bool
	refs   []ocispec.Descriptor
	err    error
}

func shareReferrers(repo registry.Repository, subject ocispec.Descriptor) registry.Repository {
	return &sharedReferrers{Repository: repo, subject: subject.Digest}
}

// Referrers lists desc's referrers of artifactType ("" for all). Not safe
// for concurrent use; Gather reads one thing after the other.
func (s *sharedReferrers) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	if desc.Digest != s.subject {
		return s.Repository.Referrers(ctx, desc, artifactType, fn)
	}
	if !s.listed {
		s.listed = true
		s.err = s.Repository.Referrers(ctx, desc, "", func(page []ocispec.Descriptor) error {
			s.refs = append(s.refs, page...)
			return nil
		})
	}
	if s.err != nil {
		return s.err
	}
	var out []ocispec.Descriptor
	for _, d := range s.refs {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return fn(out)
}
