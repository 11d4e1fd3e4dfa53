package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/reference"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// storageReader reads the registry's storage directly (not over HTTP), to
// rebuild the index: only storage can list a repository's manifests.
type storageReader struct {
	ns distribution.Namespace
}

func openStorage(ctx context.Context, root string) (*storageReader, error) {
	d, err := factory.Create(ctx, "filesystem", map[string]any{"rootdirectory": root})
	if err != nil {
		return nil, err
	}
	ns, err := storage.NewRegistry(ctx, d, storage.EnableDelete)
	if err != nil {
		return nil, err
	}
	return &storageReader{ns: ns}, nil
}

// repos lists every repository in storage.
func (s *storageReader) repos(ctx context.Context) ([]string, error) {
	en, ok := s.ns.(distribution.RepositoryEnumerator)
	if !ok {
		return nil, errors.New("storage cannot list repositories")
	}
	var out []string
	err := en.Enumerate(ctx, func(name string) error {
		out = append(out, name)
		return nil
	})
	if isPathNotFound(err) {
		return nil, nil // an empty registry has no repositories directory yet
	}
	return out, err
}

// read returns what storage holds for one repository.
func (s *storageReader) read(ctx context.Context, name string) ([]index.Manifest, map[string]digest.Digest, map[digest.Digest][]byte, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, nil, nil, err
	}
	repo, err := s.ns.Repository(ctx, named)
	if err != nil {
		return nil, nil, nil, err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return nil, nil, nil, errors.New("storage cannot list manifests")
	}
	var manifests []index.Manifest
	err = en.Enumerate(ctx, func(d digest.Digest) error {
		m, err := ms.Get(ctx, d)
		if err != nil {
			return nil // a revision link without its blob: skip, as GET would 404
		}
		mt, payload, err := m.Payload()
		if err != nil {
			return err
		}
		im, err := index.Describe(name, mt, payload)
		if err != nil {
			return nil
		}
		manifests = append(manifests, im)
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return nil, nil, nil, fmt.Errorf("listing manifests of %s: %w", name, err)
	}
	tags := map[string]digest.Digest{}
	all, err := repo.Tags(ctx).All(ctx)
	if err != nil && !isPathNotFound(err) && !errors.As(err, new(distribution.ErrRepositoryUnknown)) {
		return nil, nil, nil, fmt.Errorf("listing tags of %s: %w", name, err)
	}
	for _, t := range all {
		desc, err := repo.Tags(ctx).Get(ctx, t)
		if err != nil {
			continue
		}
		tags[t] = desc.Digest
	}
	records := map[digest.Digest][]byte{}
	for _, m := range manifests {
		if m.ArtifactType != mediatypes.ArtifactTypePromotion && m.ArtifactType != mediatypes.ArtifactTypeLineage {
			continue
		}
		layer, ok := onlyLayer(m.Raw)
		if !ok {
			continue
		}
		if body, err := repo.Blobs(ctx).Get(ctx, layer.Digest); err == nil {
			records[m.Digest] = body
		}
	}
	return manifests, tags, records, nil
}

// onlyLayer returns a manifest's single (small) layer.
func onlyLayer(raw []byte) (ocispec.Descriptor, bool) {
	var m ocispec.Manifest
	if json.Unmarshal(raw, &m) != nil || len(m.Layers) != 1 || m.Layers[0].Size > 1<<20 {
		return ocispec.Descriptor{}, false
	}
	return m.Layers[0], true
}

func isPathNotFound(err error) bool {
	var pnf storagedriver.PathNotFoundError
	return errors.As(err, &pnf)
}

// rebuild replaces the index content of the given repositories (all when
// names is nil) with what storage holds.
func rebuild(ctx context.Context, idx *index.Index, st *storageReader, names []string) (int, error) {
	if names == nil {
		var err error
		if names, err = st.repos(ctx); err != nil {
			return 0, err
		}
		indexed, err := idx.Repos(ctx)
		if err != nil {
			return 0, err
		}
		seen := map[string]bool{}
		for _, n := range names {
			seen[n] = true
		}
		for _, n := range indexed {
			if !seen[n] {
				names = append(names, n) // deleted from storage: clear it
			}
		}
	}
	for _, name := range names {
		manifests, tags, records, err := st.read(ctx, name)
		if err != nil {
			return 0, err
		}
		if err := idx.ReplaceRepo(ctx, name, manifests, tags, records); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}
