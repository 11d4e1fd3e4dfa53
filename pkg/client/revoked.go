package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
)

// RevokedReport is what RevokedHeads found: every stage head of the
// repositories checked, each marked Flagged when it rests on a key the
// policy revokes.
type RevokedReport struct {
	// Target is the registry or repository checked.
	Target string `json:"target"`
	// RevokedKeys are the revocations of the policy (in force or dated
	// later); Checked is when the policy was applied.
	RevokedKeys []policy.RevokedKey `json:"revokedKeys"`
	Checked     time.Time           `json:"checked"`
	// Repositories is how many repositories were read.
	Repositories int           `json:"repositories"`
	Heads        []policy.Head `json:"heads"`
	// Flagged counts the heads that rest on a revoked key.
	Flagged int `json:"flagged"`
}

// RevokedHeads checks every stage head of target (REGISTRY/REPO, or a
// whole REGISTRY through its catalog) against the revocations of pol: a
// head is flagged when the record of the move that put its version there
// names a key revoked since, or the version no longer meets its stage's
// rule because a key it relied on is revoked. The same policy code
// decides as the server's gate and `modelreg promote`.
func (c *Client) RevokedHeads(ctx context.Context, target string, pol *policy.Policy) (*RevokedReport, error) {
	if pol == nil {
		return nil, usage(errors.New("no trust policy: the policy names the revoked keys (see docs/policy.md)"))
	}
	target = strings.TrimSuffix(target, "/")
	rep := &RevokedReport{Target: target, RevokedKeys: pol.RevokedKeys(), Checked: time.Now(), Heads: []policy.Head{}}
	var repos []string
	if host, name, ok := strings.Cut(target, "/"); ok {
		r, err := remote.ParseReference(target)
		if err != nil {
			return nil, usage(err)
		}
		if r.Reference != "" {
			return nil, usage(fmt.Errorf("give a registry or a repository without tag or digest, e.g. %s/%s", host, r.Repository))
		}
		repos = []string{name}
	} else {
		reg, err := c.opts.Remote.Registry(host)
		if err != nil {
			return nil, err
		}
		if err := reg.Repositories(ctx, "", func(names []string) error {
			repos = append(repos, names...)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("listing the repositories of %s (the registry's catalog; name one repository instead if it has none): %w", host, err)
		}
	}
	host, _, _ := strings.Cut(target, "/")
	for _, name := range repos {
		heads, err := c.stageHeads(ctx, host+"/"+name, "")
		if err != nil {
			return nil, err
		}
		rep.Repositories++
		// One verification per version, shared by the stages holding it.
		verdicts := map[string]*Verdict{}
		for i := range heads {
			h := &heads[i]
			vd, ok := verdicts[h.Digest]
			if !ok {
				vd, err = c.verify(ctx, host+"/"+name+"@"+h.Digest, pol, "")
				if errors.Is(err, model.ErrNotModel) {
					h.Satisfied, h.Why = true, "not a model version"
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("checking %s:%s: %w", h.Repository, h.Stage, err)
				}
				verdicts[h.Digest] = vd
			}
			pol.CheckHead(h, decisionFor(vd, h.Stage), rep.Checked)
			if h.Flagged {
				rep.Flagged++
			}
		}
		rep.Heads = append(rep.Heads, heads...)
	}
	return rep, nil
}

// checkHeadsOf fills vd.StageHeads: the stages of the version's
// repository that hold it, each checked against the policy's revocations.
func (c *Client) checkHeadsOf(ctx context.Context, ref string, vd *Verdict) error {
	r, err := remote.ParseReference(ref)
	if err != nil {
		return usage(err)
	}
	heads, err := c.stageHeads(ctx, r.Registry+"/"+r.Repository, vd.Digest)
	if err != nil {
		return err
	}
	for i := range heads {
		d := vd.Policy.EvaluateAt(heads[i].Stage, vd.Evidence, vd.At)
		vd.Policy.CheckHead(&heads[i], d, vd.At)
	}
	vd.StageHeads = heads
	return nil
}

// decisionFor is the verdict's decision for stage (every protected stage
// is decided by verify with no --stage); an unprotected stage allows.
func decisionFor(vd *Verdict, stage string) policy.Decision {
	for _, d := range vd.Decisions {
		if d.Stage == stage {
			return d
		}
	}
	return vd.Policy.EvaluateAt(stage, vd.Evidence, vd.At)
}

// stageHeads lists the stage tags of repository (REGISTRY/REPO) with the
// digest each holds and the newest record of the stage when it names that
// digest (the server's signed history on modelreg serve); only, when set,
// keeps the stages holding that digest.
func (c *Client) stageHeads(ctx context.Context, repository, only string) ([]policy.Head, error) {
	r, repo, err := c.Repository(repository)
	if err != nil {
		return nil, err
	}
	tags, err := catalog.Tags(ctx, repo)
	if err != nil {
		return nil, remote.Explain(err, repository)
	}
	var stages []string
	for _, t := range tags {
		if tag.Classify(t) == tag.Stage {
			stages = append(stages, t)
		}
	}
	digests, err := catalog.Resolve(ctx, repo, stages)
	if err != nil {
		return nil, remote.Explain(err, repository)
	}
	heads := []policy.Head{}
	for _, stage := range slices.Sorted(maps.Keys(digests)) {
		d := digests[stage].String()
		if only != "" && d != only {
			continue
		}
		h := policy.Head{Repository: r.Registry + "/" + r.Repository, Stage: stage, Digest: d, RecordKeys: []string{}}
		records, err := c.History(ctx, repository, stage)
		if err != nil {
			return nil, fmt.Errorf("reading the history of %s:%s: %w", h.Repository, stage, err)
		}
		if len(records) > 0 && records[0].Digest == d {
			h.Record, h.RecordTime = records[0].Record, records[0].Time
			if records[0].Keys != nil {
				h.RecordKeys = records[0].Keys
			}
		}
		heads = append(heads, h)
	}
	return heads, nil
}

// revokedSigners lists the keys revoked at at among the valid signatures
// found, once each.
func revokedSigners(pol *policy.Policy, found []signature.Found, at time.Time) []policy.RevokedKey {
	out := []policy.RevokedKey{}
	seen := map[string]bool{}
	for _, f := range found {
		if rk, ok := pol.RevokedAt(f.Key, at); ok && f.Valid && !seen[f.Key] {
			seen[f.Key] = true
			out = append(out, rk)
		}
	}
	return out
}
