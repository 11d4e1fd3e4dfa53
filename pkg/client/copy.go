package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
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
	// Mounted counts the blobs the destination mounted from the source
	// repository (same registry): nothing was sent for them.
	Mounted int `json:"mounted,omitempty"`
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
// destination's gate (CopyRepository with Stages does that). Promotion
// records arrive as the source's history: the destination never counts
// them as its own (docs/promotion.md, "History at the source").
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
			return nil, usage(fmt.Errorf("%s names no version tag to copy; name one on the destination, e.g. %s/%s:1.4.0, or copy a stage with its version tags: modelreg copy %s/%s:STAGE %s/%s", src, dr.Registry, dr.Repository, sr.Registry, sr.Repository, dr.Registry, dr.Repository))
		}
		dstTag = sr.Reference
	}
	if _, err := dr.Digest(); err == nil {
		return nil, usage(fmt.Errorf("the destination %s names a digest: give a repository, optionally with a version tag", dst))
	}
	if err := tag.ValidateVersion(dstTag); err != nil {
		return nil, usage(fmt.Errorf("the destination tag: %w (stages move only by promotion at the destination: modelreg copy --stages)", err))
	}
	res := &CopyResult{Source: src, Digest: v.Descriptor.Digest.String(), Destination: fmt.Sprintf("%s/%s:%s", dr.Registry, dr.Repository, dstTag)}
	tr := c.opts.Progress.Track("copied", res.Destination, filesSize(v))
	vc := c.copyVersion(ctx, sr, srepo, dr, drepo, v.Descriptor, []string{dstTag}, tr)
	if vc.err != nil {
		tr.Fail(vc.err)
		c.opts.Progress.Wait()
		return nil, vc.err
	}
	if vc.Status == CopyCopied {
		tr.Done("copied")
	} else {
		tr.Done("exists")
	}
	c.opts.Progress.Wait()
	res.Copied, res.Skipped, res.Mounted, res.Bytes, res.LegacyTags = vc.Copied, vc.Skipped, vc.Mounted, vc.Bytes, vc.LegacyTags
	return res, nil
}

// CopyOptions choose what CopyRepository copies besides what SRC names.
type CopyOptions struct {
	// All copies every version of the source repository (SRC names the
	// repository, without tag).
	All bool
	// Stages re-creates the source's stage tags at the destination, each
	// by a promotion through the destination's gate, so the destination's
	// trust policy decides (a stage it refuses is reported, the others
	// still move). Without it no stage is touched.
	Stages bool
	// Policy is checked by the client before each stage promotion, as
	// `modelreg promote --policy` does: the destination's policy when it is
	// a plain registry. modelreg serve applies its own policy in any case.
	Policy *policy.Policy
	// Reason and Actor go into the destination's promotion records; ""
	// reason says where the stage was copied from.
	Reason, Actor string
}

// CopyReport is what CopyRepository did: per version and per stage, and
// the totals. A second run over an unchanged source sends nothing.
type CopyReport struct {
	Source      string        `json:"source"`
	Destination string        `json:"destination"`
	Versions    []VersionCopy `json:"versions"`
	Stages      []StageCopy   `json:"stages,omitempty"`
	// VersionsCopied counts the versions for which something new was sent
	// (a new version, or a new signature or record of a known one);
	// VersionsUnchanged those the destination already had whole.
	VersionsCopied    int `json:"versionsCopied"`
	VersionsUnchanged int `json:"versionsUnchanged"`
	VersionsFailed    int `json:"versionsFailed"`
	// StagesRefused counts the stages the destination refused (its policy
	// or gate); StagesFailed those that failed otherwise.
	StagesRefused int `json:"stagesRefused"`
	StagesFailed  int `json:"stagesFailed"`
	// Copied, Skipped, Mounted and Bytes sum the versions' counts.
	Copied  int   `json:"copied"`
	Skipped int   `json:"skipped"`
	Mounted int   `json:"mounted"`
	Bytes   int64 `json:"bytes"`
}

// Version copy outcomes.
const (
	CopyCopied    = "copied"    // something new was sent
	CopyUnchanged = "unchanged" // the destination had everything
	CopyFailed    = "failed"
	CopyNotModel  = "not-a-model" // a version-like tag that holds no model: left alone
)

// VersionCopy is the copy of one version (one digest, under its tags).
type VersionCopy struct {
	Tags       []string `json:"tags"`
	Digest     string   `json:"digest"`
	Status     string   `json:"status"`
	Copied     int      `json:"copied"`
	Skipped    int      `json:"skipped"`
	Mounted    int      `json:"mounted,omitempty"`
	Bytes      int64    `json:"bytes"`
	LegacyTags []string `json:"legacyTags,omitempty"`
	Error      string   `json:"error,omitempty"`
	err        error
}

// Stage copy outcomes.
const (
	StagePromoted  = "promoted"  // moved at the destination, through its gate
	StageUnchanged = "unchanged" // the destination's stage already held the version
	StageRefused   = "refused"   // the destination's policy or gate said no
	StageFailed    = "failed"    // anything else (the version did not copy, a network error)
)

// StageCopy is the re-creation of one source stage at the destination.
type StageCopy struct {
	Stage  string `json:"stage"`
	Digest string `json:"digest"`
	// Versions are the version tags naming Digest at the source.
	Versions []string `json:"versions"`
	Status   string   `json:"status"`
	// Record is the destination's promotion record of the move.
	Record string `json:"record,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ErrCopyIncomplete means a copy did part of its work: some version failed
// to copy, or the destination refused some stage. The report says which;
// what was copied stays (a second run only adds what is missing).
var ErrCopyIncomplete = errors.New("copy incomplete")

// CopyRepository copies more than one version at a time: with o.All every
// version of the repository src (REGISTRY/REPO); else the version the stage
// src names (REGISTRY/REPO:STAGE) under its version tags. dst is
// REGISTRY/REPO. Each version is copied as Copy does (every referrer,
// cosign's legacy tags, digests kept), and only what the destination lacks
// is sent, so running it again copies only what is new. With o.Stages,
// each source stage (the one src names, or every stage with o.All) is then
// promoted at the destination, through its gate. It returns the report
// and ErrCopyIncomplete when a version failed or a stage was refused; the
// report is complete in both cases.
func (c *Client) CopyRepository(ctx context.Context, src, dst string, o CopyOptions) (*CopyReport, error) {
	sr, srepo, err := c.Repository(src)
	if err != nil {
		return nil, err
	}
	dr, drepo, err := c.Repository(dst)
	if err != nil {
		return nil, err
	}
	if dr.Reference != "" {
		return nil, usage(fmt.Errorf("the destination %s names a tag or digest: give the repository (%s/%s); versions keep the source's tags and stages move only by promotion", dst, dr.Registry, dr.Repository))
	}
	switch {
	case o.All && sr.Reference != "":
		return nil, usage(fmt.Errorf("--all copies a whole repository: give %s/%s without a tag or digest", sr.Registry, sr.Repository))
	case !o.All && sr.Reference == "":
		return nil, usage(fmt.Errorf("%s names a repository: add a version or stage (%s:1.4.0, %s:production), or --all to copy every version", src, src, src))
	case !o.All && tag.Classify(sr.Reference) != tag.Stage:
		return nil, usage(fmt.Errorf("%s names a version, not a stage: copy it without --stages, or name a stage (%s/%s:production)", src, sr.Registry, sr.Repository))
	}
	repoName := func(r registry.Reference) string { return r.Registry + "/" + r.Repository }
	rep := &CopyReport{Source: src, Destination: repoName(dr), Versions: []VersionCopy{}}

	// What to copy: version tags grouped by digest, and the stages.
	tags, err := catalog.Tags(ctx, srepo)
	if err != nil {
		return nil, remote.Explain(err, repoName(sr))
	}
	var versionTags, stageTags []string
	for _, t := range tags {
		switch tag.Classify(t) {
		case tag.Version:
			versionTags = append(versionTags, t)
		case tag.Stage:
			if o.All || t == sr.Reference {
				stageTags = append(stageTags, t)
			}
		}
	}
	if !o.All && !slices.Contains(stageTags, sr.Reference) {
		return nil, fmt.Errorf("stage %q of %s points at no version; `modelreg list %s` shows the stages", sr.Reference, repoName(sr), repoName(sr))
	}
	resolved, err := catalog.Resolve(ctx, srepo, append(slices.Clone(versionTags), stageTags...))
	if err != nil {
		return nil, remote.Explain(err, repoName(sr))
	}
	byDigest := map[digest.Digest][]string{}
	for _, t := range versionTags {
		if d, ok := resolved[t]; ok {
			byDigest[d] = append(byDigest[d], t)
		}
	}
	stageDigest := map[string]digest.Digest{}
	for _, s := range stageTags {
		if d, ok := resolved[s]; ok {
			stageDigest[s] = d
		}
	}
	var digests []digest.Digest
	if o.All {
		digests = slices.Collect(maps.Keys(byDigest))
	} else if d, ok := stageDigest[sr.Reference]; ok {
		if len(byDigest[d]) == 0 {
			return nil, fmt.Errorf("stage %q of %s points at %s, which no version tag names: copy it by digest and name its version at the destination (modelreg copy %s@%s %s:1.4.0)", sr.Reference, repoName(sr), d, repoName(sr), d, repoName(dr))
		}
		digests = []digest.Digest{d}
	}
	for _, d := range digests {
		slices.Sort(byDigest[d])
	}
	slices.SortFunc(digests, func(a, b digest.Digest) int { return strings.Compare(byDigest[a][0], byDigest[b][0]) })

	// The versions, one after the other (each copy is itself concurrent).
	copiedOK := map[digest.Digest]bool{}
	for i, d := range digests {
		vc := c.copyOne(ctx, sr, srepo, dr, drepo, d, byDigest[d], i, len(digests))
		if err := ctx.Err(); err != nil {
			// Interrupted: a version cut short has no tag at the
			// destination; the next run completes it.
			c.opts.Progress.Wait()
			return rep, err
		}
		switch vc.Status {
		case CopyCopied:
			rep.VersionsCopied++
		case CopyUnchanged:
			rep.VersionsUnchanged++
		case CopyFailed:
			rep.VersionsFailed++
		}
		if vc.Status == CopyCopied || vc.Status == CopyUnchanged {
			copiedOK[d] = true
		}
		rep.Copied += vc.Copied
		rep.Skipped += vc.Skipped
		rep.Mounted += vc.Mounted
		rep.Bytes += vc.Bytes
		rep.Versions = append(rep.Versions, vc)
	}
	c.opts.Progress.Wait()

	if o.Stages {
		for _, s := range slices.Sorted(maps.Keys(stageDigest)) {
			d := stageDigest[s]
			sc := StageCopy{Stage: s, Digest: d.String(), Versions: byDigest[d]}
			if sc.Versions == nil {
				sc.Versions = []string{}
			}
			switch {
			case len(byDigest[d]) == 0:
				sc.Status, sc.Error = StageFailed, fmt.Sprintf("it points at %s, which no version tag of the source names, so it was not copied", d)
			case !copiedOK[d]:
				sc.Status, sc.Error = StageFailed, fmt.Sprintf("its version %s did not copy", strings.Join(byDigest[d], ","))
			default:
				c.copyStage(ctx, sr, dr, &sc, o)
			}
			switch sc.Status {
			case StageRefused:
				rep.StagesRefused++
			case StageFailed:
				rep.StagesFailed++
			}
			rep.Stages = append(rep.Stages, sc)
		}
	}
	if rep.VersionsFailed+rep.StagesRefused+rep.StagesFailed > 0 {
		var why []string
		if rep.VersionsFailed > 0 {
			why = append(why, fmt.Sprintf("%d of %d versions failed to copy", rep.VersionsFailed, len(rep.Versions)))
		}
		if rep.StagesRefused > 0 {
			var names []string
			for _, s := range rep.Stages {
				if s.Status == StageRefused {
					names = append(names, s.Stage)
				}
			}
			why = append(why, fmt.Sprintf("the destination refused %s (its policy decides: sign the version as it requires, then run the copy again)", strings.Join(names, ", ")))
		}
		if rep.StagesFailed > 0 {
			why = append(why, fmt.Sprintf("%d stages could not be re-created", rep.StagesFailed))
		}
		return rep, fmt.Errorf("%w: %s; the rest was copied", ErrCopyIncomplete, strings.Join(why, "; "))
	}
	return rep, nil
}

// copyOne copies the version d of the source under tags, reporting
// progress as version i of n.
func (c *Client) copyOne(ctx context.Context, sr registry.Reference, srepo *orasremote.Repository, dr registry.Reference, drepo *orasremote.Repository, d digest.Digest, tags []string, i, n int) VersionCopy {
	ref := sr
	ref.Reference = d.String()
	fail := func(status string, err error) VersionCopy {
		return VersionCopy{Tags: tags, Digest: d.String(), Status: status, Error: err.Error(), err: err}
	}
	v, err := transfer.Fetch(ctx, srepo, ref)
	if errors.Is(err, model.ErrNotModel) {
		return fail(CopyNotModel, err)
	}
	if err != nil {
		return fail(CopyFailed, err)
	}
	tr := c.opts.Progress.Track("copied", fmt.Sprintf("%s (%d/%d)", strings.Join(tags, ","), i+1, n), filesSize(v))
	vc := c.copyVersion(ctx, sr, srepo, dr, drepo, v.Descriptor, tags, tr)
	if vc.err != nil {
		tr.Fail(vc.err)
		return vc
	}
	if vc.Status == CopyUnchanged {
		tr.Done("exists")
	} else {
		tr.Done("copied")
	}
	return vc
}

// filesSize is the size of a version's files, what a progress line shows.
func filesSize(v *model.Version) int64 {
	var n int64
	for _, f := range v.Files {
		n += f.Descriptor.Size
	}
	return n
}

// copyVersion copies desc with every referrer and cosign's legacy tags
// from srepo to drepo, then writes its version tags there (refusing a tag
// the destination holds for another digest: versions are immutable).
func (c *Client) copyVersion(ctx context.Context, sr registry.Reference, srepo *orasremote.Repository, dr registry.Reference, drepo *orasremote.Repository, desc ocispec.Descriptor, tags []string, tr progress.Tracker) VersionCopy {
	vc := VersionCopy{Tags: tags, Digest: desc.Digest.String()}
	fail := func(err error) VersionCopy {
		vc.Status, vc.Error, vc.err = CopyFailed, err.Error(), err
		return vc
	}
	dstName := dr.Registry + "/" + dr.Repository
	for _, t := range tags {
		have, err := drepo.Resolve(ctx, t)
		switch {
		case err == nil && have.Digest != desc.Digest:
			return fail(fmt.Errorf("the destination already holds version %s as %s, not %s: versions are immutable; copy under another version (%s:NEW)", t, have.Digest, desc.Digest, dstName))
		case err != nil && !remote.IsNotFound(err):
			return fail(fmt.Errorf("reading %s:%s: %w", dstName, t, remote.Explain(err, dstName)))
		}
	}
	var copied, skipped, mounted atomic.Int64
	var bytes atomic.Int64
	opts := oras.ExtendedCopyOptions{ExtendedCopyGraphOptions: oras.DefaultExtendedCopyGraphOptions}
	opts.PostCopy = func(_ context.Context, d ocispec.Descriptor) error {
		copied.Add(1)
		bytes.Add(d.Size)
		tr.Add(int(d.Size))
		return nil
	}
	opts.OnCopySkipped = func(context.Context, ocispec.Descriptor) error {
		skipped.Add(1)
		return nil
	}
	// Within one registry, blobs are mounted from the source repository:
	// nothing is sent (a registry that refuses the mount gets a copy).
	if sr.Registry == dr.Registry && sr.Repository != dr.Repository {
		opts.MountFrom = func(context.Context, ocispec.Descriptor) ([]string, error) { return []string{sr.Repository}, nil }
		opts.OnMounted = func(context.Context, ocispec.Descriptor) error {
			mounted.Add(1)
			return nil
		}
	}
	if _, err := oras.ExtendedCopy(ctx, srepo, desc.Digest.String(), drepo, desc.Digest.String(), opts); err != nil {
		return fail(fmt.Errorf("copying %s to %s: %w", desc.Digest, dstName, remote.Explain(err, dstName)))
	}
	// cosign's legacy signatures and attestations hang on tags, not on the
	// subject: copy them by name.
	for _, t := range []string{signature.LegacyTag(desc.Digest), signature.LegacyAttestationTag(desc.Digest)} {
		if _, err := srepo.Resolve(ctx, t); err != nil {
			continue
		}
		if _, err := oras.Copy(ctx, srepo, t, drepo, t, oras.CopyOptions{CopyGraphOptions: opts.CopyGraphOptions}); err != nil {
			return fail(fmt.Errorf("copying %s: %w", t, remote.Explain(err, dstName)))
		}
		vc.LegacyTags = append(vc.LegacyTags, t)
	}
	for _, t := range tags {
		if err := drepo.Tag(ctx, desc, t); err != nil {
			return fail(fmt.Errorf("tagging %s at the destination: %w", t, remote.Explain(err, dstName)))
		}
	}
	vc.Copied, vc.Skipped, vc.Mounted, vc.Bytes = int(copied.Load()), int(skipped.Load()), int(mounted.Load()), bytes.Load()
	vc.Status = CopyUnchanged
	if vc.Copied+vc.Mounted > 0 {
		vc.Status = CopyCopied
	}
	return vc
}

// copyStage promotes sc.Stage to sc.Digest at the destination, as
// `modelreg promote` does: through modelreg serve's gate (which checks its
// own policy and writes its own record) or, on a plain registry, the
// client's check of o.Policy and a client record.
func (c *Client) copyStage(ctx context.Context, sr, dr registry.Reference, sc *StageCopy, o CopyOptions) {
	reason := o.Reason
	if reason == "" {
		reason = fmt.Sprintf("copied from %s/%s:%s", sr.Registry, sr.Repository, sc.Stage)
	}
	res, err := c.Promote(ctx, dr.Registry+"/"+dr.Repository+"@"+sc.Digest, sc.Stage, MoveOptions{Policy: o.Policy, Reason: reason, Actor: o.Actor})
	switch {
	case err != nil && refused(res, err):
		sc.Status, sc.Error = StageRefused, err.Error()
	case err != nil:
		sc.Status, sc.Error = StageFailed, err.Error()
	case res.Unchanged:
		sc.Status = StageUnchanged
	default:
		sc.Status = StagePromoted
		if res.Record != nil {
			sc.Record = res.Record.Record
		}
	}
}

// refused tells a refusal by the destination's policy (the client's check
// or the server's gate) from other failures.
func refused(res *promotion.Result, err error) bool {
	if errors.Is(err, policy.ErrDenied) || res != nil && !res.Decision.Allowed && res.Decision.Protected {
		return true
	}
	return remote.IsDenied(err)
}
