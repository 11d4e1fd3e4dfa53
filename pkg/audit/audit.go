// Package audit builds the compliance report of a model: for each version,
// what it was made from, how it was evaluated, who signed it, and every
// stage it entered and left, with time, actor and reason. Everything comes
// from the registry's referrers, so the report can be rebuilt at any time.
package audit

import (
	"context"
	"crypto/ed25519"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/evaluation"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// Report is the compliance report of one repository (or one version).
type Report struct {
	Repository string    `json:"repository"`
	Generated  time.Time `json:"generated"`
	// KeysTrusted lists the fingerprints signatures were checked against.
	KeysTrusted []string  `json:"keysTrusted"`
	Versions    []Version `json:"versions"`
	// RevokedKeys and StageHeads are filled by CheckRevoked: the keys
	// the policy revokes, and the current version of each stage checked
	// for resting on one of them.
	RevokedKeys []policy.RevokedKey `json:"revokedKeys,omitempty"`
	StageHeads  []policy.Head       `json:"stageHeads,omitempty"`
	// Refused lists the stage moves the registry refused (modelreg
	// serve's promotion.refused events), oldest first.
	Refused []Refusal `json:"refusedMoves,omitempty"`

	// records are every promotion record read, for CheckRevoked.
	records []promotion.Record
}

// Version is one model version's record.
type Version struct {
	Digest      string              `json:"digest"`
	Tags        []string            `json:"tags"`
	Metadata    model.Metadata      `json:"metadata"`
	Lineage     []lineage.Source    `json:"lineage"`
	Evaluations []evaluation.Record `json:"evaluations"`
	Signatures  []signature.Found   `json:"signatures"`
	// Stages lists every move of a stage onto or off this version, oldest first.
	Stages []Event `json:"stages"`
}

// Event is a stage entering or leaving a version.
type Event struct {
	Stage string    `json:"stage"`
	Event string    `json:"event"` // "entered" or "left"
	Time  time.Time `json:"time"`
	Actor string    `json:"actor"`
	// Reason and Rollback are the move's; Other is the digest the stage
	// came from (entered) or went to (left).
	Reason   string `json:"reason,omitempty"`
	Rollback bool   `json:"rollback"`
	Other    string `json:"other,omitempty"`
	Record   string `json:"record"`
}

// Build reads the report. only, when set, limits it to one version's
// digest. serverKey, when set (the registry is modelreg serve), keeps only
// the promotion records that registry signed: a record a client pushed is
// not history. It runs in three steps: find the versions, read each one's
// referrers once (signatures, lineage, evaluations, records), then place
// every stage move on the versions it entered and left.
func Build(ctx context.Context, repo registry.Repository, ref registry.Reference, only digest.Digest, trusted []key.Public, serverKey ed25519.PublicKey) (*Report, error) {
	r := &Report{Repository: ref.Registry + "/" + ref.Repository, Generated: time.Now().UTC(), KeysTrusted: []string{}, Versions: []Version{}}
	for _, k := range trusted {
		r.KeysTrusted = append(r.KeysTrusted, k.Fingerprint)
	}
	byDigest, err := versionTags(ctx, repo, r.Repository, only)
	if err != nil {
		return nil, err
	}
	// Every promotion record of every version: a version left a stage when
	// another version's record names it as previous.
	var records []promotion.Record
	var versions []Version
	for d, ts := range byDigest {
		sub := ref
		sub.Reference = d.String()
		v, err := transfer.Fetch(ctx, repo, sub)
		if err != nil {
			continue // not a model (or gone): not part of the report
		}
		ver, recs, err := readVersion(ctx, repo, r.Repository, v, ts, trusted, serverKey)
		if err != nil {
			return nil, err
		}
		records = append(records, recs...)
		if only == "" || d == only {
			versions = append(versions, *ver)
		}
	}
	for i := range versions {
		versions[i].Stages = stageEvents(versions[i].Digest, records)
	}
	slices.SortFunc(versions, func(a, b Version) int {
		if c := b.Metadata.Created.Compare(a.Metadata.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Digest, b.Digest)
	})
	r.Versions = versions
	r.records = records
	return r, nil
}

// versionTags maps each digest a version or stage tag names to its tags
// (and only, when set, to none if no tag names it).
func versionTags(ctx context.Context, repo registry.Repository, name string, only digest.Digest) (map[digest.Digest][]string, error) {
	tags, err := catalog.Tags(ctx, repo)
	if err != nil {
		return nil, remote.Explain(err, name)
	}
	var wanted []string
	for _, t := range tags {
		if k := tag.Classify(t); k == tag.Version || k == tag.Stage {
			wanted = append(wanted, t)
		}
	}
	digests, err := catalog.Resolve(ctx, repo, wanted)
	if err != nil {
		return nil, remote.Explain(err, name)
	}
	byDigest := map[digest.Digest][]string{}
	for t, d := range digests {
		byDigest[d] = append(byDigest[d], t)
	}
	if _, ok := byDigest[only]; only != "" && !ok {
		byDigest[only] = nil
	}
	return byDigest, nil
}

// readVersion reads one version's referrers once and everything the report
// says of it; recs are its promotion records: signed by serverKey, when
// set, else the ones clients wrote for name (records copied from another
// registry or repository are that one's history, not this one's).
func readVersion(ctx context.Context, repo registry.Repository, name string, v *model.Version, tags []string, trusted []key.Public, serverKey ed25519.PublicKey) (*Version, []promotion.Record, error) {
	l, err := referrers.List(ctx, repo, v.Descriptor, referrers.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	var recs []promotion.Record
	if serverKey != nil {
		all, err := promotion.From(ctx, l, serverKey)
		if err != nil {
			return nil, nil, err
		}
		for _, rec := range all {
			if rec.Trusted {
				recs = append(recs, rec)
			}
		}
	} else {
		all, err := promotion.ExamineFrom(ctx, l, nil)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range all {
			if promotion.OwnOnPlain(e, name) {
				recs = append(recs, e.Record)
			}
		}
	}
	slices.Sort(tags)
	if tags == nil {
		tags = []string{}
	}
	ver := &Version{Digest: v.Descriptor.Digest.String(), Tags: tags, Metadata: v.Metadata}
	if ver.Lineage, err = lineage.GatherFrom(ctx, l, trusted); err != nil {
		return nil, nil, err
	}
	if ver.Evaluations, err = evaluation.From(ctx, l); err != nil {
		return nil, nil, err
	}
	found, err := signature.SearchFrom(ctx, l, trusted, signature.MaxSignatureReferrers)
	if err != nil {
		return nil, nil, err
	}
	ver.Signatures = found.Found
	if ver.Signatures == nil {
		ver.Signatures = []signature.Found{}
	}
	return ver, recs, nil
}

// stageEvents lists, oldest first, the moves that brought the version d
// into a stage or took it out.
func stageEvents(d string, records []promotion.Record) []Event {
	events := []Event{}
	for _, rec := range records {
		if rec.Digest == d {
			events = append(events, Event{Stage: rec.Stage, Event: "entered", Time: rec.Time, Actor: rec.Actor, Reason: rec.Reason, Rollback: rec.Rollback, Other: rec.Previous, Record: rec.Record})
		}
		if rec.Previous == d {
			events = append(events, Event{Stage: rec.Stage, Event: "left", Time: rec.Time, Actor: rec.Actor, Reason: rec.Reason, Rollback: rec.Rollback, Other: rec.Digest, Record: rec.Record})
		}
	}
	slices.SortStableFunc(events, func(a, b Event) int { return a.Time.Compare(b.Time) })
	return events
}
