// Package referrers writes and lists the referrers of a manifest: the
// signatures, attestations, lineage records, evaluations, promotion records
// and tombstones attached to a model version. Every reader in modelreg
// lists a subject through List, once, and filters the typed items it gets
// back; the writers attach through Push.
//
// Targets are oras-go's interfaces, not a registry client: a
// remote.Repository, an OCI layout directory (content/oci) or an in-memory
// store all work. How a subject's referrers are found depends on what the
// target can do, checked at run time in one place (see List).
package referrers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// Size bounds. Anyone who may push to a repository may attach referrers
// to its versions, so nothing a listing names is read unbounded.
const (
	// MaxManifestSize bounds a referrer manifest (and a tag-schema index):
	// the limit oras-go's remote.Repository applies to manifests.
	MaxManifestSize = 4 << 20
	// MaxBlobSize bounds a layer read through Item.Fetch: a signature
	// payload or a sigstore bundle.
	MaxBlobSize = 4 << 20
	// MaxRecordSize bounds the one layer of a record as Push writes it
	// (Item.Blob): lineage statements, evaluations and
	// promotion records are a few kilobytes.
	MaxRecordSize = 1 << 20
)

// ErrMalformed marks a referrer that is not what its listing says: a
// manifest that is not JSON, or a record without exactly one layer of at
// most MaxRecordSize. Readers skip or report it; it is never a reason to
// stop reading the others.
var ErrMalformed = errors.New("malformed referrer")

// Kind says what a referrer is, from its listing alone (artifactType and,
// for sigstore bundles, the dev.sigstore.bundle.predicateType annotation),
// so readers can pick theirs without reading any manifest.
type Kind string

// The kinds of referrers modelreg reads.
const (
	// KindSignature is a cosign signature: an OCI 1.1 simple-signing
	// referrer, or a sigstore bundle labelled with cosign's signature
	// predicate.
	KindSignature Kind = "signature"
	// KindAttestation is a sigstore bundle labelled with another predicate
	// (a lineage attestation, an SLSA provenance).
	KindAttestation Kind = "attestation"
	// KindBundle is a sigstore bundle whose listing does not say what it
	// holds (a registry that drops annotations from its listing, or a
	// producer that sets none): a signature or an attestation, known only
	// once its manifest is read, so both readers look at it.
	KindBundle Kind = "bundle"
	// KindLineage is an unsigned lineage record.
	KindLineage Kind = "lineage"
	// KindEvaluation is an evaluation record.
	KindEvaluation Kind = "evaluation"
	// KindPromotion is a promotion record.
	KindPromotion Kind = "promotion"
	// KindTombstone is the server's record of a deleted version.
	KindTombstone Kind = "tombstone"
	// KindOther is anything else (SBOMs, other tools' artifacts).
	KindOther Kind = "other"
)

// Classify tells a referrer's kind from its listing descriptor.
func Classify(d ocispec.Descriptor) Kind {
	switch d.ArtifactType {
	case mediatypes.ArtifactTypeCosignSignature:
		return KindSignature
	case mediatypes.SigstoreBundle:
		switch pt := d.Annotations[mediatypes.AnnotationBundlePredicateType]; pt {
		case "":
			return KindBundle
		case mediatypes.PredicateCosignSign:
			return KindSignature
		default:
			return KindAttestation
		}
	case mediatypes.ArtifactTypeLineage:
		return KindLineage
	case mediatypes.ArtifactTypeEvaluation:
		return KindEvaluation
	case mediatypes.ArtifactTypePromotion:
		return KindPromotion
	case mediatypes.ArtifactTypeTombstone:
		return KindTombstone
	}
	return KindOther
}

// Push stores blob as a referrer of subject: an OCI 1.1 image manifest
// with artifactType, the empty config, blob as its only layer (of media
// type layerType), subject set and the given annotations. It is what
// promotion.ReferrerManifest builds, byte for byte, when annotations carry
// a creation time; without one, oras.PackManifest adds the current time
// (org.opencontainers.image.created), which is also what List orders by.
//
// On a registry without the Referrers API, remote.Repository keeps the
// referrers tag-schema index up to date itself; OCI layouts and in-memory
// stores index the subject in their graph.
func Push(ctx context.Context, target content.Pusher, subject ocispec.Descriptor, artifactType, layerType string, blob []byte, annotations map[string]string) (ocispec.Descriptor, error) {
	manifests, blobs := pushers(target)
	empty := ocispec.DescriptorEmptyJSON
	// The config descriptor without its embedded data, as every modelreg
	// referrer (and the server's canonical record) has it: PackManifest
	// would otherwise embed "data" in the manifest.
	config := ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size}
	layer := ocispec.Descriptor{MediaType: layerType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := pushIfAbsent(ctx, blobs, config, empty.Data); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := pushIfAbsent(ctx, blobs, layer, blob); err != nil {
		return ocispec.Descriptor{}, err
	}
	sub := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	return oras.PackManifest(ctx, manifests, oras.PackManifestVersion1_1, artifactType, oras.PackManifestOptions{
		Subject:             &sub,
		Layers:              []ocispec.Descriptor{layer},
		ManifestAnnotations: annotations,
		ConfigDescriptor:    &config,
	})
}

// pushers splits a target into where manifests and blobs go. A
// registry.Repository says it itself (its Manifests and Blobs); any other
// target keeps both in one store.
func pushers(target content.Pusher) (manifests, blobs content.Pusher) {
	if r, ok := target.(registry.Repository); ok {
		return r.Manifests(), r.Blobs()
	}
	return target, target
}

// fetchers is pushers for reading.
func fetchers(target content.ReadOnlyStorage) (manifests, blobs content.Fetcher) {
	if r, ok := target.(registry.Repository); ok {
		return r.Manifests(), r.Blobs()
	}
	return target, target
}

// PushBlob stores a small blob on target (in its blob store, for a
// registry.Repository) unless it is there already.
func PushBlob(ctx context.Context, target content.Pusher, d ocispec.Descriptor, b []byte) error {
	_, blobs := pushers(target)
	return pushIfAbsent(ctx, blobs, d, b)
}

func pushIfAbsent(ctx context.Context, p content.Pusher, d ocispec.Descriptor, b []byte) error {
	if s, ok := p.(content.ReadOnlyStorage); ok {
		if ok, err := s.Exists(ctx, d); err == nil && ok {
			return nil
		}
	}
	err := p.Push(ctx, d, bytes.NewReader(b))
	// Some registries answer a second upload of the same blob with an
	// error rather than success.
	if err != nil && (errors.Is(err, errdef.ErrAlreadyExists) || strings.Contains(err.Error(), "already exists")) {
		return nil
	}
	return err
}

// ListOptions tunes List.
type ListOptions struct {
	// ArtifactType, when set, lists only referrers of that artifactType
	// (the registry filters when it can, List always). Leave it empty to
	// list once for several readers.
	ArtifactType string
}

// Listing is the referrers of one subject, listed once. Its items read
// their manifests and blobs lazily and keep what they read, so readers
// sharing a listing never read a referrer twice. A Listing is not safe for
// concurrent use.
type Listing struct {
	// Subject is the manifest the referrers refer to.
	Subject ocispec.Descriptor
	// Items are the referrers, in the order the target listed them.
	Items []*Item

	target oras.ReadOnlyTarget
}

// Target is where the listing was read from; readers use it for what is
// not a referrer (cosign's legacy .sig and .att tags).
func (l *Listing) Target() oras.ReadOnlyTarget { return l.target }

// Of returns the items of the given kinds, in listing order.
func (l *Listing) Of(kinds ...Kind) []*Item {
	var out []*Item
	for _, it := range l.Items {
		if slices.Contains(kinds, it.Kind) {
			out = append(out, it)
		}
	}
	return out
}

// List lists the referrers of subject once. How depends on the target,
// decided here and nowhere else:
//
//   - a registry.ReferrerLister (remote.Repository) answers itself: the
//     Referrers API, or on registries without it oras-go's own read of the
//     referrers tag-schema index;
//   - a graph store (an OCI layout, an in-memory store) knows the
//     manifests that name subject (registry.Referrers);
//   - any other target is read through the tag schema: the index tagged
//     sha256-<hex> of the subject.
//
// A subject without referrers (or a registry answering 404) gives an empty
// listing.
func List(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, opts ListOptions) (*Listing, error) {
	descs, err := list(ctx, target, subject, opts.ArtifactType)
	if err != nil && !remote.IsNotFound(err) {
		return nil, fmt.Errorf("listing referrers of %s: %w", subject.Digest, err)
	}
	l := &Listing{Subject: subject, target: target}
	for _, d := range descs {
		if opts.ArtifactType != "" && d.ArtifactType != opts.ArtifactType {
			continue
		}
		l.Items = append(l.Items, &Item{Kind: Classify(d), Descriptor: d, l: l})
	}
	return l, nil
}

func list(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, artifactType string) ([]ocispec.Descriptor, error) {
	switch t := target.(type) {
	case registry.ReferrerLister:
		var out []ocispec.Descriptor
		err := t.Referrers(ctx, subject, artifactType, func(page []ocispec.Descriptor) error {
			out = append(out, page...)
			return nil
		})
		return out, err
	case content.ReadOnlyGraphStorage:
		return registry.Referrers(ctx, t, subject, artifactType)
	}
	return tagSchema(ctx, target, subject)
}

// TagSchemaTag is the tag under which a registry without the Referrers API
// keeps the index of d's referrers (distribution-spec's referrers tag
// schema): sha256-<hex>.
func TagSchemaTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded()
}

func tagSchema(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	_, raw, err := oras.FetchBytes(ctx, target, TagSchemaTag(subject.Digest), oras.FetchBytesOptions{MaxBytes: MaxManifestSize})
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("referrers index %s: %w", TagSchemaTag(subject.Digest), err)
	}
	return idx.Manifests, nil
}

// Item is one referrer of a listing's subject.
type Item struct {
	// Kind is what the listing says the referrer is.
	Kind Kind
	// Descriptor is the referrer's manifest as listed: digest, size,
	// artifactType and annotations.
	Descriptor ocispec.Descriptor

	l         *Listing
	manifest  *ocispec.Manifest
	malformed error // ErrMalformed, once known
	blob      []byte
}

// Manifest reads the referrer's manifest (once), verified against the
// listed digest and at most MaxManifestSize. A manifest that is not JSON
// is ErrMalformed. A failed read (the network, a manifest the registry
// lost) is not remembered: the next call tries again.
func (it *Item) Manifest(ctx context.Context) (*ocispec.Manifest, error) {
	if it.manifest != nil || it.malformed != nil {
		return it.manifest, it.malformed
	}
	raw, err := fetch(ctx, it.l.target, it.Descriptor, true, MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("referrer %s: %w", it.Descriptor.Digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		it.malformed = fmt.Errorf("referrer %s: %w: %v", it.Descriptor.Digest, ErrMalformed, err)
		return nil, it.malformed
	}
	it.manifest = &m
	return it.manifest, nil
}

// onlyLayer returns the one layer of a record manifest as Push writes it:
// false when the manifest has another number of layers, or a layer over
// MaxRecordSize (the rule the server's onlyLayer applies to what it stores).
func onlyLayer(m *ocispec.Manifest) (ocispec.Descriptor, bool) {
	if len(m.Layers) != 1 || m.Layers[0].Size > MaxRecordSize || m.Layers[0].Size < 0 {
		return ocispec.Descriptor{}, false
	}
	return m.Layers[0], true
}

// Blob reads (once) the only layer of a record referrer as Push writes it,
// verified against its digest; a failed read is tried again by the next
// call. A manifest that is not JSON, has another
// number of layers, or a layer over MaxRecordSize is ErrMalformed.
func (it *Item) Blob(ctx context.Context) ([]byte, error) {
	if it.blob != nil {
		return it.blob, nil
	}
	m, err := it.Manifest(ctx)
	if err != nil {
		return nil, err
	}
	layer, ok := onlyLayer(m)
	if !ok {
		return nil, fmt.Errorf("referrer %s: %w: expected one layer of at most %d bytes", it.Descriptor.Digest, ErrMalformed, MaxRecordSize)
	}
	b, err := it.Fetch(ctx, layer)
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	it.blob = b
	return b, nil
}

// Fetch reads one of the referrer's layers (a signature payload, a
// bundle), verified against its descriptor and at most MaxBlobSize.
func (it *Item) Fetch(ctx context.Context, layer ocispec.Descriptor) ([]byte, error) {
	b, err := FetchBlob(ctx, it.l.target, layer)
	if err != nil {
		return nil, fmt.Errorf("referrer %s: %w", it.Descriptor.Digest, err)
	}
	return b, nil
}

// Created is the referrer's creation time from its listing
// (org.opencontainers.image.created), zero when there is none, it does
// not parse, or it is more than FutureSkew after now: a referrer cannot
// jump a newest-first queue by claiming the future.
func (it *Item) Created(now time.Time) time.Time {
	t, err := time.Parse(time.RFC3339Nano, it.Descriptor.Annotations[mediatypes.AnnotationCreated])
	if err != nil || t.After(now.Add(FutureSkew)) {
		return time.Time{}
	}
	return t
}

// FutureSkew is how far ahead of now a creation time may be and still be
// believed.
const FutureSkew = 24 * time.Hour

// SortNewestFirst orders items by their creation time, newest first; those
// without a believable one come last; ties by digest, so the order does
// not depend on the registry. Readers that cap how many referrers they
// examine (signatures, attestations) use it, so the cap keeps the newest.
func SortNewestFirst(items []*Item, now time.Time) {
	slices.SortStableFunc(items, func(a, b *Item) int {
		if c := b.Created(now).Compare(a.Created(now)); c != 0 {
			return c
		}
		return strings.Compare(string(a.Descriptor.Digest), string(b.Descriptor.Digest))
	})
}

// FetchManifest reads the manifest a tag or digest names on target (cosign's
// legacy .sig and .att tags), at most MaxManifestSize, verified. It uses
// the target's one-request fetch by reference where it has one.
func FetchManifest(ctx context.Context, target oras.ReadOnlyTarget, reference string) (ocispec.Descriptor, *ocispec.Manifest, error) {
	desc, raw, err := oras.FetchBytes(ctx, target, reference, oras.FetchBytesOptions{MaxBytes: MaxManifestSize})
	if err != nil {
		return desc, nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return desc, nil, fmt.Errorf("manifest %s: %w: %v", desc.Digest, ErrMalformed, err)
	}
	return desc, &m, nil
}

// FetchBlob reads a small blob of target, at most MaxBlobSize, verified
// against its descriptor.
func FetchBlob(ctx context.Context, target content.ReadOnlyStorage, d ocispec.Descriptor) ([]byte, error) {
	return fetch(ctx, target, d, false, MaxBlobSize)
}

func fetch(ctx context.Context, target content.ReadOnlyStorage, d ocispec.Descriptor, manifest bool, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d read: %w", d.Digest, d.Size, limit, errdef.ErrSizeExceedsLimit)
	}
	manifests, blobs := fetchers(target)
	from := blobs
	if manifest {
		from = manifests
	}
	return content.FetchAll(ctx, from, d)
}
