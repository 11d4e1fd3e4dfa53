package promotion

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// Options tunes Promote and Rollback.
type Options struct {
	// Policy decides; nil leaves every stage unprotected.
	Policy *policy.Policy
	// Actor and Reason go into the record.
	Actor, Reason string
	// Now stamps the record; nil means time.Now.
	Now func() time.Time
	// ServerRecords is true when the registry is modelreg serve, which
	// checks its own policy and writes the record itself when the tag
	// moves: the client then only moves the tag and reads the record back.
	ServerRecords bool
	// Tagger moves the stage tag; nil uses the repository. Against modelreg
	// serve it should send the Modelreg-Reason/Actor/Rollback headers.
	Tagger content.Tagger
	// History reads a stage's history for Rollback; nil walks the records
	// in the registry (History). Against modelreg serve it should read the
	// server's signed history, so a record a client pushed can never pick
	// the version a rollback returns to.
	History func(ctx context.Context, stage string) ([]Record, error)
	// MoreSignatures, when set, adds signatures that approve target though
	// they sign another digest: against modelreg serve, those on the image
	// view it derives from target, which its gate counts too.
	MoreSignatures func(ctx context.Context, target ocispec.Descriptor) ([]signature.Found, error)
}

// Result is what a promotion or rollback did.
type Result struct {
	// Unchanged is true when the stage already held the version.
	Unchanged bool            `json:"unchanged"`
	Record    *Record         `json:"record,omitempty"`
	Decision  policy.Decision `json:"decision"`
	// Evidence is what the policy was checked against.
	Evidence policy.Evidence `json:"evidence"`
}

// ErrConflict means another promotion of the same stage ran at the same
// time; the caller should look at the history and try again.
var ErrConflict = errors.New("concurrent promotion")

// Promote moves stage to target after checking the policy, then records
// the move. On a registry without the modelreg server, a concurrent move of
// the same stage is detected by re-reading the tag before and after moving
// it (see docs/promotion.md for the exact guarantee).
func Promote(ctx context.Context, repo registry.Repository, ref registry.Reference, target ocispec.Descriptor, stage string, opts Options) (*Result, error) {
	return move(ctx, repo, ref, target, stage, opts, false)
}

// Rollback moves stage back to the digest it held before the current one,
// as the records tell, checking the policy for that digest too.
func Rollback(ctx context.Context, repo registry.Repository, ref registry.Reference, stage string, opts Options) (*Result, error) {
	if err := tag.ValidateStage(stage); err != nil {
		return nil, err
	}
	cur, err := repo.Resolve(ctx, stage)
	if remote.IsNotFound(err) {
		return nil, fmt.Errorf("stage %q of %s points at no version: nothing to roll back", stage, repoName(ref))
	}
	if err != nil {
		return nil, remote.Explain(err, repoName(ref)+":"+stage)
	}
	var history []Record
	if opts.History != nil {
		history, err = opts.History(ctx, stage)
	} else {
		history, err = History(ctx, repo, ref, stage)
	}
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(history, func(r Record) bool { return r.Digest == cur.Digest.String() })
	switch {
	case i < 0:
		return nil, fmt.Errorf("stage %q points at %s but no promotion record names it (was the tag moved by another tool?); promote a version explicitly instead", stage, cur.Digest)
	case history[i].Previous == "":
		return nil, fmt.Errorf("stage %q has no earlier version: %s was the first to enter it (%s)", stage, cur.Digest, history[i].Time.Format(time.RFC3339))
	}
	prevRef := ref
	prevRef.Reference = history[i].Previous
	target, err := repo.Resolve(ctx, history[i].Previous)
	if remote.IsNotFound(err) {
		return nil, fmt.Errorf("stage %q would roll back to %s, which was deleted from the registry (its tombstone among that digest's referrers says who deleted it, when and why); a deleted version cannot re-enter a stage: promote an existing version explicitly (modelreg list %s)", stage, history[i].Previous, repoName(ref))
	}
	if err != nil {
		return nil, remote.Explain(err, fmt.Sprintf("the earlier version %s", prevRef))
	}
	return move(ctx, repo, ref, target, stage, opts, true)
}

func move(ctx context.Context, repo registry.Repository, ref registry.Reference, target ocispec.Descriptor, stage string, opts Options, rollback bool) (*Result, error) {
	if err := tag.ValidateStage(stage); err != nil {
		return nil, err
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	prev, err := current(ctx, repo, stage)
	if err != nil {
		return nil, remote.Explain(err, repoName(ref)+":"+stage)
	}
	res := &Result{Evidence: policy.Evidence{Signatures: []signature.Found{}}}
	if prev == target.Digest.String() {
		res.Unchanged = true
		res.Decision = policy.Decision{Stage: stage, Allowed: true}
		return res, nil
	}
	if _, protected := opts.Policy.Stage(stage); protected {
		ev, err := opts.Policy.Gather(ctx, repo, target)
		if err != nil {
			return nil, remote.Explain(err, repoName(ref)+"@"+target.Digest.String())
		}
		if opts.MoreSignatures != nil {
			if more, err := opts.MoreSignatures(ctx, target); err == nil {
				ev.Signatures = append(ev.Signatures, more...)
			}
		}
		res.Evidence = ev
	}
	res.Decision = opts.Policy.Evaluate(stage, res.Evidence)
	if err := res.Decision.Err(); err != nil {
		return res, fmt.Errorf("%s@%s may not enter %q: %w", repoName(ref), target.Digest, stage, err)
	}
	tagger := opts.Tagger
	if tagger == nil {
		tagger = repo
	}
	if opts.ServerRecords {
		return serverMove(ctx, repo, ref, tagger, target, stage, prev, res)
	}
	versions, err := versionsOf(ctx, repo, target)
	if err != nil {
		return nil, remote.Explain(err, repoName(ref))
	}
	rec := Record{
		Repository: repoName(ref), Stage: stage, Digest: target.Digest.String(), Version: versions,
		Previous: prev, Actor: opts.Actor, Time: now().UTC(), Reason: opts.Reason, Rollback: rollback, Keys: []string{},
	}
	for _, a := range res.Decision.Approvers {
		rec.Keys = append(rec.Keys, a.Fingerprint)
	}
	if res.Decision.Protected {
		rec.Policy = opts.Policy.Digest
	}
	recDesc, err := Write(ctx, repo, target, rec)
	if err != nil {
		return nil, fmt.Errorf("writing the promotion record: %w", remote.Explain(err, repoName(ref)))
	}
	rec.Record = recDesc.Digest.String()
	res.Record = &rec

	// Nobody may have moved the stage since we read it.
	if now, err := current(ctx, repo, stage); err != nil || now != prev {
		_ = repo.Delete(ctx, recDesc)
		if err != nil {
			return nil, remote.Explain(err, repoName(ref)+":"+stage)
		}
		return nil, fmt.Errorf("%w: stage %q moved from %s to %s while this promotion ran; nothing was changed, check `modelreg history` and try again", ErrConflict, stage, orNone(prev), now)
	}
	if err := tagger.Tag(ctx, target, stage); err != nil {
		_ = repo.Delete(ctx, recDesc)
		return nil, fmt.Errorf("moving the stage tag: %w", remote.Explain(err, repoName(ref)+":"+stage))
	}
	if now, err := current(ctx, repo, stage); err == nil && now != target.Digest.String() {
		return res, fmt.Errorf("%w: stage %q was moved to %s right after this promotion set it; both moves are recorded, check `modelreg history`", ErrConflict, stage, now)
	}
	return res, nil
}

// serverMove moves the tag on a modelreg server, which enforces its policy
// and records the move in the same request, serialized per stage; the
// record it wrote is read back for the caller.
func serverMove(ctx context.Context, repo registry.Repository, ref registry.Reference, tagger content.Tagger, target ocispec.Descriptor, stage, prev string, res *Result) (*Result, error) {
	if err := tagger.Tag(ctx, target, stage); err != nil {
		return res, fmt.Errorf("the registry refused to move %q: %w", stage, remote.Explain(err, repoName(ref)+":"+stage))
	}
	recs, err := Of(ctx, repo, target)
	if err != nil {
		return res, fmt.Errorf("the stage moved, but its record could not be read back: %w", err)
	}
	Sort(recs)
	for i := range recs {
		if recs[i].Stage == stage {
			res.Record = &recs[i]
			return res, nil
		}
	}
	return res, fmt.Errorf("the stage moved, but the registry wrote no promotion record for it")
}

// current is the digest a stage points at, "" when the tag does not exist.
func current(ctx context.Context, repo registry.Repository, stage string) (string, error) {
	d, err := repo.Resolve(ctx, stage)
	if remote.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// versionsOf lists the version tags naming desc.
func versionsOf(ctx context.Context, repo registry.Repository, desc ocispec.Descriptor) ([]string, error) {
	tags, err := catalog.Tags(ctx, repo)
	if err != nil {
		return nil, err
	}
	var versions []string
	for _, t := range tags {
		if tag.Classify(t) == tag.Version {
			versions = append(versions, t)
		}
	}
	digests, err := catalog.Resolve(ctx, repo, versions)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for t, d := range digests {
		if d == desc.Digest {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}

func repoName(ref registry.Reference) string { return ref.Registry + "/" + ref.Repository }

func orNone(d string) string {
	if d == "" {
		return "(none)"
	}
	return d
}
