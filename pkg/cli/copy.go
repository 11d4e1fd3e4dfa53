package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/spf13/cobra"
)

func (a *app) copyCmd() *cobra.Command {
	var all, stages bool
	var mf moveFlags
	c := &cobra.Command{
		Use:   "copy SRC DST",
		Short: "Copy a version, a stage or a whole model to another repository or registry, with its signatures and records",
		Long: `Copy model versions between any two registries (modelreg serve or not, both
ways), each with its blobs and every referrer, recursively: signatures in
all three cosign forms, attestations, lineage, evaluations, promotion
records, an image view; cosign's legacy sha256-<hex>.sig/.att tags too.
Digests are kept, so signatures verify at the destination (cosign verify,
modelreg verify). What the destination already has is not sent again: a
second run copies only what is new.

What SRC names decides what is copied:
  REGISTRY/REPO:1.4.0 or @sha256:…   one version; DST is REGISTRY/REPO, or
                                     REGISTRY/REPO:TAG to tag it otherwise
  REGISTRY/REPO:production           the version the stage points at, under
                                     its version tag(s)
  REGISTRY/REPO --all                every version of the repository

Stages are not copied unless --stages is given, and then never as bare
tags: each source stage (the one SRC names, or every stage with --all) is
promoted at the destination, through the destination's gate, exactly as
` + "`modelreg promote`" + ` does. On modelreg serve its own trust policy decides and
it writes its own promotion record; on a plain registry --policy (default
.modelreg/policy.yaml when present) is checked by this client. A stage the
destination refuses (a production that requires two signatures, for a
version signed once) is reported with the reason, the other stages still
move, and the command exits 1.

The source's promotion records arrive as its history, never as the
destination's: ` + "`modelreg history`" + ` shows them apart, as "history at <source>"
(docs/promotion.md).

Progress goes to standard error, one line per version. --output json
prints, for one version, {source, destination, digest, copied, skipped,
bytes, legacyTags}; for a stage or --all, {source, destination, versions:
[{tags, digest, status, copied, skipped, bytes, legacyTags, error}],
stages: [{stage, digest, versions, status, record, error}],
versionsCopied, versionsUnchanged, versionsFailed, stagesRefused,
stagesFailed, copied, skipped, mounted, bytes}.`,
		Example: `  # one version, dev to prod
  modelreg copy dev.example.com/team/fraud:1.4.0 prod.example.com/team/fraud

  # what production runs in dev, and production itself, through prod's gate
  modelreg copy dev.example.com/team/fraud:production prod.example.com/team/fraud --stages

  # mirror a whole model nightly: only what is new is sent
  modelreg copy dev.example.com/team/fraud prod.example.com/team/fraud --all --stages --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			sr, err := remote.ParseReference(args[0])
			if err != nil {
				return usageError{err}
			}
			if !all && !stages && (sr.Reference == "" || tag.Classify(sr.Reference) != tag.Stage) {
				if sr.Reference == "" {
					return usageError{fmt.Errorf("%s names a repository: add a version (:1.4.0), a stage (:production), or --all to copy every version", args[0])}
				}
				return a.copyVersion(c, args, jsonOut)
			}
			if mf.reason != "" || mf.policyPath != "" || mf.actor != "" {
				if !stages {
					return usageError{errors.New("--reason, --policy and --actor are for the promotions --stages makes")}
				}
			}
			var pol *policy.Policy
			if stages {
				if pol, err = policy.LoadDefault(mf.policyPath); err != nil {
					return err
				}
			}
			rep, err := a.client(c, jsonOut).CopyRepository(c.Context(), args[0], args[1], client.CopyOptions{
				All: all, Stages: stages, Policy: pol, Reason: mf.reason, Actor: mf.actor,
			})
			if rep != nil {
				if jsonOut {
					if jerr := a.json(rep); jerr != nil {
						return jerr
					}
				} else {
					a.printCopyReport(rep)
				}
			}
			return err
		},
	}
	c.Flags().BoolVar(&all, "all", false, "copy every version of the repository SRC (incremental: what the destination has is not sent again)")
	c.Flags().BoolVar(&stages, "stages", false, "also re-create the source's stages at the destination, by promotion through its gate (its policy decides)")
	mf.add(c)
	a.addOutputFlag(c)
	return c
}

// copyVersion is `modelreg copy` of one version.
func (a *app) copyVersion(c *cobra.Command, args []string, jsonOut bool) error {
	res, err := a.client(c, jsonOut).Copy(c.Context(), args[0], args[1])
	if err != nil {
		return err
	}
	if jsonOut {
		return a.json(res)
	}
	fmt.Fprintf(a.io.Err, "copied %s to %s: %d manifests and blobs sent (%s), %d already there", res.Source, res.Destination, res.Copied, progress.Size(res.Bytes), res.Skipped)
	if res.Mounted > 0 {
		fmt.Fprintf(a.io.Err, ", %d mounted", res.Mounted)
	}
	if len(res.LegacyTags) > 0 {
		fmt.Fprintf(a.io.Err, "; cosign tags %s", strings.Join(res.LegacyTags, ", "))
	}
	fmt.Fprintln(a.io.Err)
	fmt.Fprintln(a.io.Out, res.Digest)
	return nil
}

// printCopyReport prints what a copy of a stage or repository did: a line
// per version and per stage, then the totals.
func (a *app) printCopyReport(rep *client.CopyReport) {
	w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VERSION\tDIGEST\tSTATUS\tSENT\tDETAIL")
	for _, v := range rep.Versions {
		detail := fmt.Sprintf("%d sent, %d already there", v.Copied, v.Skipped)
		if v.Mounted > 0 {
			detail += fmt.Sprintf(", %d mounted", v.Mounted)
		}
		if v.Error != "" {
			detail = v.Error
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", strings.Join(v.Tags, ","), shortDigest(v.Digest), v.Status, progress.Size(v.Bytes), detail)
	}
	w.Flush()
	if len(rep.Stages) > 0 {
		fmt.Fprintln(a.io.Out)
		w = tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "STAGE\tVERSION\tSTATUS\tDETAIL")
		for _, s := range rep.Stages {
			detail := s.Record
			if s.Record != "" {
				detail = "recorded as " + s.Record
			}
			if s.Error != "" {
				detail = s.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Stage, orDash(strings.Join(s.Versions, ",")), s.Status, detail)
		}
		w.Flush()
	}
	fmt.Fprintf(a.io.Err, "%s to %s: %d versions copied, %d unchanged, %d failed; %d manifests and blobs sent (%s), %d already there",
		rep.Source, rep.Destination, rep.VersionsCopied, rep.VersionsUnchanged, rep.VersionsFailed, rep.Copied, progress.Size(rep.Bytes), rep.Skipped)
	if rep.Mounted > 0 {
		fmt.Fprintf(a.io.Err, ", %d mounted", rep.Mounted)
	}
	if len(rep.Stages) > 0 {
		fmt.Fprintf(a.io.Err, "; %d stages refused, %d failed", rep.StagesRefused, rep.StagesFailed)
	}
	fmt.Fprintln(a.io.Err)
}
