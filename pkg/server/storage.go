package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/reference"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// store reads and writes the registry's storage directly (not over HTTP):
// to rebuild the index (only storage can list a repository's manifests),
// to check tags against the truth rather than the index, and to write the
// records and tag moves the server makes itself.
type store struct {
	ns distribution.Namespace
	// driver is the storage driver under ns: the collector stats and
	// deletes blobs with it (distribution's vacuum), and reads when a
	// manifest revision was written.
	driver storagedriver.StorageDriver
}

// openStorage opens the storage the configuration names (the section
// effectiveStorage returns), with the same driver and parameters as the
// embedded distribution, so the rebuild, views, records and the collector
// read and write what distribution serves. It checks that the storage
// answers: a wrong endpoint or credentials fail here, with the driver's
// error, not on the first push.
func openStorage(ctx context.Context, sc configuration.Storage) (*store, error) {
	name := sc.Type()
	d, err := factory.Create(ctx, name, sc.Parameters())
	if err != nil {
		var inv factory.InvalidStorageDriverError
		if errors.As(err, &inv) {
			return nil, fmt.Errorf("storage driver %q is not built into modelreg serve: use filesystem, or s3 for AWS S3 and S3-compatible stores (MinIO, SeaweedFS, Ceph, GCS's XML interoperability API)", name)
		}
		return nil, fmt.Errorf("storage: the %s driver refused its parameters: %w (see distribution's storage configuration reference)", name, err)
	}
	if err := storageReachable(ctx, d); err != nil {
		return nil, fmt.Errorf("storage: %w; check the endpoint, bucket and credentials in the storage section", err)
	}
	// Digest resumption off: the server's own blob writers (uploads in
	// parts, records) live in one process and never resume another's
	// upload, and with resumption on, every Write compares the driver
	// writer's Size with the bytes hashed; the S3 driver's Size counts
	// only the chunks it has flushed, so the check reset the hash in the
	// middle of a blob and a correct upload in parts failed its digest.
	ns, err := storage.NewRegistry(ctx, d, storage.EnableDelete, storage.DisableDigestResumption)
	if err != nil {
		return nil, err
	}
	return &store{ns: ns, driver: d}, nil
}

// storageReachable asks the driver for the registry's root: a storage
// that answers, even that the root does not exist yet (a new bucket), is
// reachable.
func storageReachable(ctx context.Context, d storagedriver.StorageDriver) error {
	_, err := d.Stat(ctx, "/docker/registry/v2")
	if err == nil || isPathNotFound(err) {
		return nil
	}
	return fmt.Errorf("the %s storage does not answer: %w", d.Name(), err)
}

func (s *store) repo(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, err
	}
	return s.ns.Repository(ctx, named)
}

// tag returns what a tag points at in storage; ok is false when it does not exist.
func (s *store) tag(ctx context.Context, name, t string) (desc ocispec.Descriptor, ok bool, err error) {
	r, err := s.repo(ctx, name)
	if err != nil {
		return desc, false, err
	}
	desc, err = r.Tags(ctx).Get(ctx, t)
	if errors.As(err, new(distribution.ErrTagUnknown)) || isPathNotFound(err) || errors.As(err, new(distribution.ErrRepositoryUnknown)) {
		return desc, false, nil
	}
	return desc, err == nil, err
}

// tagsOf lists the tags pointing at a digest, from storage.
func (s *store) tagsOf(ctx context.Context, name string, d digest.Digest) ([]string, error) {
	r, err := s.repo(ctx, name)
	if err != nil {
		return nil, err
	}
	tags, err := r.Tags(ctx).Lookup(ctx, ocispec.Descriptor{Digest: d})
	if isPathNotFound(err) || errors.As(err, new(distribution.ErrRepositoryUnknown)) {
		return nil, nil
	}
	return tags, err
}

func (s *store) setTag(ctx context.Context, name, t string, desc ocispec.Descriptor) error {
	r, err := s.repo(ctx, name)
	if err != nil {
		return err
	}
	return r.Tags(ctx).Tag(ctx, t, desc)
}

func (s *store) untag(ctx context.Context, name, t string) error {
	r, err := s.repo(ctx, name)
	if err != nil {
		return err
	}
	err = r.Tags(ctx).Untag(ctx, t)
	if isPathNotFound(err) || errors.As(err, new(distribution.ErrTagUnknown)) {
		return nil
	}
	return err
}

// manifest reads a manifest from storage; ok is false when it does not exist.
func (s *store) manifest(ctx context.Context, name string, d digest.Digest) (mediaType string, payload []byte, ok bool, err error) {
	r, err := s.repo(ctx, name)
	if err != nil {
		return "", nil, false, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return "", nil, false, err
	}
	m, err := ms.Get(ctx, d)
	if errors.As(err, new(distribution.ErrManifestUnknownRevision)) || isPathNotFound(err) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, err
	}
	mediaType, payload, err = m.Payload()
	return mediaType, payload, err == nil, err
}

// putReferrer writes a single-layer referrer (a record the server made):
// the empty config, the layer, then the manifest, which is the commit.
func (s *store) putReferrer(ctx context.Context, name string, manifest []byte, layer ocispec.Descriptor, blob []byte) error {
	r, err := s.repo(ctx, name)
	if err != nil {
		return err
	}
	for _, b := range []struct {
		mt string
		c  []byte
	}{{ocispec.MediaTypeEmptyJSON, ocispec.DescriptorEmptyJSON.Data}, {layer.MediaType, blob}} {
		if _, err := r.Blobs(ctx).Put(ctx, b.mt, b.c); err != nil {
			return fmt.Errorf("writing a record blob: %w", err)
		}
	}
	m, _, err := distribution.UnmarshalManifest(ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return err
	}
	_, err = ms.Put(ctx, m)
	return err
}

// blob reads a small blob (a record's layer).
func (s *store) blob(ctx context.Context, name string, d digest.Digest) ([]byte, error) {
	r, err := s.repo(ctx, name)
	if err != nil {
		return nil, err
	}
	return r.Blobs(ctx).Get(ctx, d)
}

// repos lists every repository in storage.
func (s *store) repos(ctx context.Context) ([]string, error) {
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

// read returns what storage holds for one repository, with its records
// decoded by dec.
func (s *store) read(ctx context.Context, name string, dec *decoder) (index.Content, error) {
	c := index.Content{Tags: map[string]digest.Digest{}, Lineage: map[digest.Digest][]byte{}, Promotions: map[digest.Digest]index.Promotion{}}
	repo, err := s.repo(ctx, name)
	if err != nil {
		return c, err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return c, err
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return c, errors.New("storage cannot list manifests")
	}
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
		c.Manifests = append(c.Manifests, im)
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return c, fmt.Errorf("listing manifests of %s: %w", name, err)
	}
	all, err := repo.Tags(ctx).All(ctx)
	if err != nil && !isPathNotFound(err) && !errors.As(err, new(distribution.ErrRepositoryUnknown)) {
		return c, fmt.Errorf("listing tags of %s: %w", name, err)
	}
	for _, t := range all {
		desc, err := repo.Tags(ctx).Get(ctx, t)
		if err != nil {
			continue
		}
		c.Tags[t] = desc.Digest
	}
	for _, m := range c.Manifests {
		layer, ok := onlyLayer(m.Raw)
		if !ok || !isRecord(m.ArtifactType) {
			continue
		}
		body, err := repo.Blobs(ctx).Get(ctx, layer.Digest)
		if err != nil {
			continue
		}
		switch m.ArtifactType {
		case mediatypes.ArtifactTypeLineage:
			c.Lineage[m.Digest] = body
		case mediatypes.ArtifactTypePromotion:
			if p, err := dec.promotion(m, layer, body); err == nil {
				c.Promotions[m.Digest] = p
			}
		case mediatypes.ArtifactTypeTombstone:
			if rs, err := dec.tombstone(m, layer, body); err == nil {
				c.Retired = append(c.Retired, rs...)
			}
		}
	}
	return c, nil
}

// onlyLayer returns a manifest's single (small) layer.
func onlyLayer(raw []byte) (ocispec.Descriptor, bool) {
	var m ocispec.Manifest
	if json.Unmarshal(raw, &m) != nil || len(m.Layers) != 1 || m.Layers[0].Size > 1<<20 {
		return ocispec.Descriptor{}, false
	}
	return m.Layers[0], true
}

// isRecord reports whether an artifactType is one of modelreg's append-only
// records, which no client may delete.
func isRecord(artifactType string) bool {
	switch artifactType {
	case mediatypes.ArtifactTypePromotion, mediatypes.ArtifactTypeLineage, mediatypes.ArtifactTypeEvaluation, mediatypes.ArtifactTypeTombstone:
		return true
	}
	return false
}

func isPathNotFound(err error) bool {
	var pnf storagedriver.PathNotFoundError
	return errors.As(err, &pnf)
}

// rebuild replaces the index content of the given repositories (all when
// names is nil) with what storage holds. A full rebuild is marked in the
// index while it runs, so one cut short is done again at the next start.
func rebuild(ctx context.Context, idx *index.Index, st *store, dec *decoder, names []string) (int, error) {
	full := names == nil
	if full {
		if err := idx.BeginRebuild(ctx); err != nil {
			return 0, err
		}
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
		// Storage is read under the repository's row lock: a write of
		// another replica lands before the read or after the replace.
		err := idx.RebuildRepo(ctx, name, func(ctx context.Context) (index.Content, error) {
			c, err := st.read(ctx, name, dec)
			c.Repair = !full
			return c, err
		})
		if err != nil {
			return 0, err
		}
	}
	if full {
		if err := idx.EndRebuild(ctx); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}
