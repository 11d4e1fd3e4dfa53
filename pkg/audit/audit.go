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
	"github.com/modelreg/modelreg/pkg/promotion"
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
// not history.
func Build(ctx context.Context, repo registry.Repository, ref registry.Reference, only digest.Digest, trusted []key.Public, serverKey ed25519.PublicKey) (*Report, error) {
	r := &Report{Repository: ref.Registry + "/" + ref.Repository, Generated: time.Now().UTC(), KeysTrusted: []string{}, Versions: []Version{}}
	for _, k := range trusted {
		r.KeysTrusted = append(r.KeysTrusted, k.Fingerprint)
	}
	tags, err := catalog.Tags(ctx, repo)
	if err != nil {
		return nil, remote.Explain(err, r.Repository)
	}
	var wanted []string
	for _, t := range tags {
		if k := tag.Classify(t); k == tag.Version || k == tag.Stage {
			wanted = append(wanted, t)
		}
	}
	digests, err := catalog.Resolve(ctx, repo, wanted)
	if err != nil {
		return nil, remote.Explain(err, r.Repository)
	}
	byDigest := map[digest.Digest][]string{}
	for t, d := range digests {
		byDigest[d] = append(byDigest[d], t)
	}
	if only != "" {
		if _, ok := byDigest[only]; !ok {
			byDigest[only] = nil
		}
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
		recs, err := promotion.OfSigned(ctx, repo, v.Descriptor, serverKey)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			if serverKey == nil || rec.Trusted {
				records = append(records, rec)
			}
		}
		if only != "" && d != only {
			continue
		}
		slices.Sort(ts)
		if ts == nil {
			ts = []string{}
		}
		ver := Version{Digest: d.String(), Tags: ts, Metadata: v.Metadata}
		if ver.Lineage, err = lineage.Gather(ctx, repo, v.Descriptor, trusted); err != nil {
			return nil, err
		}
		if ver.Evaluations, err = evaluation.Of(ctx, repo, v.Descriptor); err != nil {
			return nil, err
		}
		if ver.Signatures, err = signature.Find(ctx, repo, v.Descriptor, trusted); err != nil {
			return nil, err
		}
		if ver.Signatures == nil {
			ver.Signatures = []signature.Found{}
		}
		versions = append(versions, ver)
	}
	for i := range versions {
		v := &versions[i]
		v.Stages = []Event{}
		for _, rec := range records {
			if rec.Digest == v.Digest {
				v.Stages = append(v.Stages, Event{Stage: rec.Stage, Event: "entered", Time: rec.Time, Actor: rec.Actor, Reason: rec.Reason, Rollback: rec.Rollback, Other: rec.Previous, Record: rec.Record})
			}
			if rec.Previous == v.Digest {
				v.Stages = append(v.Stages, Event{Stage: rec.Stage, Event: "left", Time: rec.Time, Actor: rec.Actor, Reason: rec.Reason, Rollback: rec.Rollback, Other: rec.Digest, Record: rec.Record})
			}
		}
		slices.SortStableFunc(v.Stages, func(a, b Event) int { return a.Time.Compare(b.Time) })
	}
	slices.SortFunc(versions, func(a, b Version) int {
		if c := b.Metadata.Created.Compare(a.Metadata.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Digest, b.Digest)
	})
	r.Versions = versions
	return r, nil
}
