// Package promotion moves stages: it checks the trust policy, moves the
// stage tag, and writes an append-only promotion record next to the
// promoted version, so any OCI client can read a stage's history.
package promotion

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
)

// Record is one move of a stage. It is stored as a referrer of the version
// the stage moved to, so it travels with that version and never changes.
type Record struct {
	Repository string `json:"repository"`
	Stage      string `json:"stage"`
	// Digest is the version the stage points at after this move; Version
	// its version tags at that time.
	Digest  string   `json:"digest"`
	Version []string `json:"version,omitempty"`
	// Previous is the digest the stage held before, "" for the first move.
	Previous string    `json:"previous"`
	Actor    string    `json:"actor"`
	Time     time.Time `json:"time"`
	Reason   string    `json:"reason,omitempty"`
	Rollback bool      `json:"rollback"`
	// Keys lists the fingerprints of the keys whose signatures satisfied
	// the policy; Policy is the sha256 of the policy file applied ("" when
	// the stage was unprotected).
	Keys   []string `json:"keys"`
	Policy string   `json:"policy,omitempty"`
	// Kind is promotion, rollback, removal (the stage was emptied) or
	// anchor (see chain.go); "" in records from before the chain.
	Kind string `json:"kind,omitempty"`
	// Seq numbers a stage's chained records from 1; PreviousRecord is the
	// digest of the record before this one in the stage ("" for the
	// first), so a gap or an edit anywhere breaks the chain.
	Seq            int64  `json:"seq,omitempty"`
	PreviousRecord string `json:"previousRecord,omitempty"`
	// Anchors, on an anchor, lists the records from before the chain that
	// it vouches for, oldest first.
	Anchors []string `json:"anchors,omitempty"`
	// Record is the digest of the record's own manifest (set when read).
	Record string `json:"record,omitempty"`
	// Trusted is set when read: the record is signed by the registry's
	// key (modelreg serve), so it is part of the stage's history.
	Trusted bool `json:"trusted,omitempty"`
}

// Write stores r as a referrer of the version it promotes.
func Write(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, r Record) (ocispec.Descriptor, error) {
	r.Record = ""
	blob, err := json.Marshal(r)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return signature.PushReferrer(ctx, repo, subject, mediatypes.ArtifactTypePromotion, mediatypes.ArtifactTypePromotion, blob, map[string]string{
		mediatypes.AnnotationPromotionStage: r.Stage,
		mediatypes.AnnotationCreated:        r.Time.UTC().Format(time.RFC3339Nano),
	})
}

// Of lists the promotion records of one version (any stage).
func Of(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor) ([]Record, error) {
	return OfSigned(ctx, target, subject, nil)
}

// OfSigned is Of, marking Trusted the records signed by pub (the key of
// the modelreg serve that wrote them). It lists only promotion referrers;
// From reads a listing already made.
func OfSigned(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, pub ed25519.PublicKey) ([]Record, error) {
	l, err := referrers.List(ctx, target, subject, referrers.ListOptions{ArtifactType: mediatypes.ArtifactTypePromotion})
	if err != nil {
		return nil, err
	}
	return From(ctx, l, pub)
}

// From reads the promotion records of a listing of the subject's
// referrers, marking Trusted those signed by pub. A malformed record is an
// error, not skipped: it may be a move of a stage, which History would
// otherwise leave out without a word.
func From(ctx context.Context, l *referrers.Listing, pub ed25519.PublicKey) ([]Record, error) {
	var out []Record
	err := each(ctx, l, func(d ocispec.Descriptor, m *ocispec.Manifest, blob []byte) error {
		payload, signed, err := Unseal(m.Layers[0].MediaType, blob, mediatypes.ArtifactTypePromotion, pub)
		if err != nil {
			return fmt.Errorf("promotion record %s: %w", d.Digest, err)
		}
		var r Record
		if err := json.Unmarshal(payload, &r); err != nil {
			return fmt.Errorf("promotion record %s is not valid JSON", d.Digest)
		}
		if err := attached(d, m, r); err != nil {
			return err
		}
		r.Record, r.Trusted = d.Digest.String(), signed
		out = append(out, r)
		return nil
	})
	return out, err
}

// ExamineFrom is From with each record's origin: trusted when one of keys
// verifies it (Examine).
func ExamineFrom(ctx context.Context, l *referrers.Listing, keys map[string]ed25519.PublicKey) ([]Examined, error) {
	var out []Examined
	err := each(ctx, l, func(d ocispec.Descriptor, m *ocispec.Manifest, blob []byte) error {
		e, err := Examine(m.Layers[0].MediaType, blob, keys)
		if err != nil {
			return fmt.Errorf("promotion record %s: %w", d.Digest, err)
		}
		if err := attached(d, m, e.Record); err != nil {
			return err
		}
		e.Record.Record = d.Digest.String()
		out = append(out, e)
		return nil
	})
	return out, err
}

// each calls fn with every promotion record of a listing: its descriptor,
// manifest and layer.
func each(ctx context.Context, l *referrers.Listing, fn func(d ocispec.Descriptor, m *ocispec.Manifest, blob []byte) error) error {
	for _, it := range l.Of(referrers.KindPromotion) {
		d := it.Descriptor
		blob, err := it.Blob(ctx)
		if errors.Is(err, referrers.ErrMalformed) {
			return fmt.Errorf("promotion record %s is malformed", d.Digest)
		}
		if err != nil {
			return err
		}
		m, _ := it.Manifest(ctx) // read by Blob
		if err := fn(d, m, blob); err != nil {
			return err
		}
	}
	return nil
}

// attached checks that a record hangs on the version it names.
func attached(d ocispec.Descriptor, m *ocispec.Manifest, r Record) error {
	if m.Subject == nil || m.Subject.Digest.String() != r.Digest && r.Kind != KindRemoval {
		return fmt.Errorf("promotion record %s is attached to another version than the one it names", d.Digest)
	}
	return nil
}

// History returns the records of stage in the repository, newest first,
// on a registry whose records clients write (not modelreg serve): the
// repository's own records only (OwnOnPlain); records copied from
// elsewhere are Gather's second answer.
func History(ctx context.Context, repo registry.Repository, ref registry.Reference, stage string) ([]Record, error) {
	own, _, err := Gather(ctx, repo, ref, stage, nil)
	return own, err
}

// Gather reads every record of stage in the repository and splits them
// into the repository's own history (newest first) and the histories
// copied from other registries and repositories, per origin, trusted when
// one of keys signed them. It reads the records of every version tag, of
// the version the stage points at now, and of every digest a record names
// as previous, so moves to versions whose tags were deleted are still
// found.
func Gather(ctx context.Context, repo registry.Repository, ref registry.Reference, stage string, keys map[string]ed25519.PublicKey) ([]Record, []Copied, error) {
	tags, err := catalog.Tags(ctx, repo)
	if err != nil {
		return nil, nil, remote.Explain(err, ref.Registry+"/"+ref.Repository)
	}
	var wanted []string
	for _, t := range tags {
		if tag.Classify(t) == tag.Version || t == stage {
			wanted = append(wanted, t)
		}
	}
	digests, err := catalog.Resolve(ctx, repo, wanted)
	if err != nil {
		return nil, nil, remote.Explain(err, ref.Registry+"/"+ref.Repository)
	}
	queue := []digest.Digest{}
	for _, d := range digests {
		queue = append(queue, d)
	}
	seen := map[digest.Digest]bool{}
	name := repoName(ref)
	var own []Record
	var copied []Examined
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if seen[d] {
			continue
		}
		seen[d] = true
		desc, err := repo.Resolve(ctx, d.String())
		if remote.IsNotFound(err) {
			continue // the version was deleted; its records went with it
		}
		if err != nil {
			return nil, nil, remote.Explain(err, ref.Registry+"/"+ref.Repository+"@"+d.String())
		}
		l, err := referrers.List(ctx, repo, desc, referrers.ListOptions{ArtifactType: mediatypes.ArtifactTypePromotion})
		if err != nil {
			return nil, nil, err
		}
		recs, err := ExamineFrom(ctx, l, keys)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range recs {
			if e.Record.Stage != stage {
				continue
			}
			if OwnOnPlain(e, name) {
				own = append(own, e.Record)
			} else {
				copied = append(copied, e)
			}
			if p, err := digest.Parse(e.Record.Previous); err == nil {
				queue = append(queue, p)
			}
		}
	}
	Sort(own)
	return own, Group(copied), nil
}

// Sort orders records newest first; records with the same time follow
// their chain of previous digests.
func Sort(rs []Record) {
	slices.SortStableFunc(rs, func(a, b Record) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		switch {
		case a.Previous == b.Digest:
			return -1
		case b.Previous == a.Digest:
			return 1
		}
		return strings.Compare(b.Record, a.Record)
	})
}

// At returns the record in force at t (the newest not after t), or nil
// when the stage was empty then. records must be sorted newest first.
func At(records []Record, t time.Time) *Record {
	for i := range records {
		if !records[i].Time.After(t) {
			return &records[i]
		}
	}
	return nil
}
