package cli

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
)

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

type moveFlags struct {
	reason, policyPath, actor string
}

func (f *moveFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.reason, "reason", "", "why, for the record (shown by history and audit)")
	c.Flags().StringVar(&f.policyPath, "policy", "", "trust policy file (default "+policy.DefaultPath+" when present; without a policy no stage is protected)")
	c.Flags().StringVar(&f.actor, "actor", "", "who is promoting, for the record (default $MODELREG_ACTOR, else user@host)")
}

// options turns the flags into the library's move options: the policy
// (--policy, else the default file when present), reason and actor.
func (f *moveFlags) options() (client.MoveOptions, error) {
	pol, err := policy.LoadDefault(f.policyPath)
	if err != nil {
		return client.MoveOptions{}, err
	}
	return client.MoveOptions{Policy: pol, Reason: f.reason, Actor: f.actor}, nil
}

func (a *app) report(res *promotion.Result, err error, jsonOut bool, what string) error {
	if jsonOut && res != nil {
		if jerr := a.json(res); jerr != nil {
			return jerr
		}
	}
	if err != nil {
		return err
	}
	if jsonOut {
		return nil
	}
	if res.Unchanged {
		fmt.Fprintf(a.io.Err, "stage %s already holds this version; nothing to do\n", res.Decision.Stage)
		return nil
	}
	r := res.Record
	fmt.Fprintf(a.io.Err, "%s %s: %s -> %s (%s)\n", what, r.Stage, shortOrNone(r.Previous), shortDigest(r.Digest), strings.Join(r.Version, ","))
	if res.Decision.Protected {
		var who []string
		for _, ap := range res.Decision.Approvers {
			who = append(who, ap.Name)
		}
		fmt.Fprintf(a.io.Err, "policy satisfied by %s\n", strings.Join(who, ", "))
	}
	fmt.Fprintf(a.io.Err, "recorded as %s\n", r.Record)
	return nil
}

func shortOrNone(d string) string {
	if d == "" {
		return "(empty)"
	}
	return shortDigest(d)
}

func (a *app) promoteCmd() *cobra.Command {
	var to string
	var mf moveFlags
	c := &cobra.Command{
		Use:   "promote REF --to STAGE",
		Short: "Move a stage to a version, if the trust policy allows it",
		Long: `Check the trust policy for STAGE against the digest of REF; if it is
satisfied, move the stage tag to that digest and write a promotion record
(a referrer of the version: stage, new and previous digest, actor, time,
reason, approving key fingerprints). On refusal nothing moves, and the
message says exactly what is missing. Promoting the version a stage already
holds does nothing and succeeds.

Against a plain OCI registry the stage tag is re-read before and after it is
moved, and a concurrent promotion of the same stage is reported as a
conflict (docs/promotion.md); modelreg serve serializes promotions itself.`,
		Example: `  modelreg promote localhost:5000/team/fraud:1.4.0 --to production --reason "beats 1.3 on holdout" --policy policy.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if err := tag.ValidateStage(to); err != nil {
				return usageError{fmt.Errorf("--to: %w", err)}
			}
			mo, err := mf.options()
			if err != nil {
				return err
			}
			res, err := a.client(c, true).Promote(c.Context(), args[0], to, mo)
			return a.report(res, err, jsonOut, "promoted")
		},
	}
	c.Flags().StringVar(&to, "to", "", "the stage to move (required), e.g. staging, production")
	mf.add(c)
	a.addOutputFlag(c)
	return c
}

func (a *app) rollbackCmd() *cobra.Command {
	var stage string
	var mf moveFlags
	c := &cobra.Command{
		Use:   "rollback REPO --stage STAGE",
		Short: "Move a stage back to the version it held before",
		Long: `Move STAGE back to the digest it held before the current one, as the
promotion records tell. The policy is checked for that digest too, and the
move is recorded like any promotion, marked as a rollback. Refuses when the
current version was the first to enter the stage.`,
		Example: `  modelreg rollback localhost:5000/team/fraud --stage production --reason "1.4 regressed on fraud recall"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if err := tag.ValidateStage(stage); err != nil {
				return usageError{fmt.Errorf("--stage: %w", err)}
			}
			ref, err := remote.ParseReference(args[0])
			if err != nil {
				return usageError{err}
			}
			if err := repoOnly(ref); err != nil {
				return err
			}
			mo, err := mf.options()
			if err != nil {
				return err
			}
			res, err := a.client(c, true).Rollback(c.Context(), args[0], stage, mo)
			return a.report(res, err, jsonOut, "rolled back")
		},
	}
	c.Flags().StringVar(&stage, "stage", "", "the stage to roll back (required)")
	mf.add(c)
	a.addOutputFlag(c)
	return c
}

// verifyHistory runs `history --verify`: the chain checked against
// storage, with the registry's key pinned by --server-key or published.
func (a *app) verifyHistory(c *cobra.Command, cl *client.Client, repo, stage, serverKey string, jsonOut bool) error {
	var pub ed25519.PublicKey
	if serverKey != "" {
		b, err := os.ReadFile(serverKey)
		if err != nil {
			return usageError{fmt.Errorf("--server-key: %w", err)}
		}
		if pub, err = promotion.ParsePublicPEM(b); err != nil {
			return usageError{fmt.Errorf("--server-key %s: %w", serverKey, err)}
		}
	}
	rep, err := cl.VerifyHistory(c.Context(), repo, stage, pub)
	if err != nil {
		return err
	}
	if jsonOut {
		return a.json(rep)
	}
	fmt.Fprintf(a.io.Out, "stage %s: %d chained records verified (%d older records adopted by an anchor), signed by %s; the stage holds %s\n",
		stage, rep.Records, rep.Adopted, rep.KeyID, orDash(rep.Holds))
	return nil
}

// printAt answers `history --at`: the record in force then, or that the
// stage held nothing (empty, or emptied by then).
func (a *app) printAt(records []promotion.Record, stage string, when time.Time, jsonOut bool) error {
	r := promotion.At(records, when)
	if r != nil && r.Digest == "" {
		r = nil
	}
	if jsonOut {
		return a.json(map[string]any{"stage": stage, "at": when, "record": r})
	}
	if r == nil {
		fmt.Fprintf(a.io.Out, "stage %s held no version at %s\n", stage, when.Format(time.RFC3339))
		return nil
	}
	fmt.Fprintf(a.io.Out, "at %s, %s held %s (%s), since %s, put there by %s", when.Format(time.RFC3339), stage, r.Digest,
		orDash(strings.Join(r.Version, ",")), r.Time.Format(time.RFC3339), r.Actor)
	if r.Reason != "" {
		fmt.Fprintf(a.io.Out, ": %q", r.Reason)
	}
	fmt.Fprintln(a.io.Out)
	return nil
}

// printHistory prints a stage's records, newest first.
func (a *app) printHistory(records []promotion.Record, stage string, jsonOut bool) error {
	if jsonOut {
		return a.json(records)
	}
	if len(records) == 0 {
		fmt.Fprintf(a.io.Err, "stage %s has no promotion records\n", stage)
		return nil
	}
	w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tVERSION\tDIGEST\tPREVIOUS\tACTOR\tKIND\tREASON")
	for _, r := range records {
		kind := r.Kind
		if r.Rollback {
			kind = promotion.KindRollback
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), orDash(strings.Join(r.Version, ",")), shortDigest(r.Digest),
			shortOrNone(r.Previous), r.Actor, orDash(kind), r.Reason)
	}
	return w.Flush()
}

// printCopied prints the histories of the stage copied from other
// registries, each under its own "history at <source>" heading: never
// mixed with the registry's own.
func (a *app) printCopied(copied []promotion.Copied, stage string) error {
	for i, src := range copied {
		if i > 0 {
			fmt.Fprintln(a.io.Out)
		}
		n := fmt.Sprintf("%d records", len(src.Records))
		if len(src.Records) == 1 {
			n = "1 record"
		}
		fmt.Fprintf(a.io.Out, "history at %s (stage %s, %s): ", src.Source(), stage, n)
		switch {
		case src.Trusted && src.Registry == promotion.ThisRegistry:
			fmt.Fprintf(a.io.Out, "signed by this registry's key %s, in another repository\n", shortDigest(src.KeyID))
		case src.Trusted:
			fmt.Fprintf(a.io.Out, "trusted, signed by registry %q (%s)\n", src.Registry, shortDigest(src.KeyID))
		case src.KeyID != "":
			fmt.Fprintf(a.io.Out, "UNTRUSTED, signed by %s: %s\n", shortDigest(src.KeyID), src.Problem)
		default:
			fmt.Fprintf(a.io.Out, "UNTRUSTED, %s\n", src.Problem)
		}
		if err := a.printHistory(src.Records, stage, false); err != nil {
			return err
		}
	}
	return nil
}

func repoOnly(ref registry.Reference) error {
	if ref.Reference != "" {
		return usageError{fmt.Errorf("give the repository without tag or digest, e.g. %s/%s", ref.Registry, ref.Repository)}
	}
	return nil
}

func (a *app) historyCmd() *cobra.Command {
	var stage, at, serverKey, policyPath string
	var verify, copiedOnly bool
	c := &cobra.Command{
		Use:   "history REPO --stage STAGE [--at TIME] [--verify]",
		Short: "Show a stage's promotions and rollbacks, newest first; verify its hash chain",
		Long: `List the promotion records of STAGE, newest first: time, version, digest,
actor, reason, and whether the move was a rollback. With --at, print only
what the stage held at that instant (RFC 3339, e.g. 2026-03-03T14:00:00Z)
and who put it there.

On modelreg serve the history is the server's: only records signed by the
registry's key count (records a client pushed are kept but never shown as
history). --verify checks that history against storage, not the server's
index: every record fetched by digest, its signature checked, each naming
the one before it, numbered without gaps, and the stage tag holding what
the newest record says. It exits 1 naming the first break. The key comes
from the registry's status endpoint unless --server-key pins it (a file
saved from ` + "`curl REGISTRY/v2/_modelreg/v1/status`" + `), which is what an
auditor should do. On other registries records are written by clients and
cannot be verified this way.

Records copied from another registry (modelreg copy takes a version's
promotion records along) are that registry's history, never this one's:
they are listed after it, each source under "history at <source>",
trusted only when signed by a registry key the trust policy lists under
registries: (the source's serverKey, from its /v2/_modelreg/v1/status).
On modelreg serve its own policy decides; elsewhere --policy does. A
record a client wrote for another repository, or that no listed key
signed, is shown as UNTRUSTED. --copied shows only these histories
(with --output json: [{repository, keyId, registry, trusted, problem,
records}]); without it the JSON is the stage's own records.`,
		Example: `  modelreg history localhost:5000/team/fraud --stage production
  modelreg history localhost:5000/team/fraud --stage production --at 2026-03-03T14:00:00Z --output json
  modelreg history localhost:5000/team/fraud --stage production --verify --server-key registry.pub
  modelreg history prod.example.com/team/fraud --stage production --copied --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if err := tag.ValidateStage(stage); err != nil {
				return usageError{fmt.Errorf("--stage: %w", err)}
			}
			var when time.Time
			if at != "" {
				if when, err = time.Parse(time.RFC3339Nano, at); err != nil {
					return usageError{fmt.Errorf("--at %q: expected an RFC 3339 time, e.g. 2026-03-03T14:00:00Z", at)}
				}
				if !strings.Contains(at, ".") {
					// A time given to the second means the whole second:
					// a move at 14:00:00.250 is in force "at 14:00:00".
					when = when.Add(time.Second - time.Nanosecond)
				}
			}
			ref, err := remote.ParseReference(args[0])
			if err != nil {
				return usageError{err}
			}
			if err := repoOnly(ref); err != nil {
				return err
			}
			if copiedOnly && (verify || at != "") {
				return usageError{errors.New("--copied lists the histories copied from other registries; --verify and --at are about this registry's own")}
			}
			cl := a.client(c, true)
			if verify {
				return a.verifyHistory(c, cl, args[0], stage, serverKey, jsonOut)
			}
			var pol *policy.Policy
			if at == "" {
				// Only for trusting copied histories: a default policy
				// that does not load must not hide the stage's own.
				if pol, err = policy.LoadDefault(policyPath); err != nil && policyPath != "" {
					return err
				} else if err != nil {
					fmt.Fprintf(a.io.Err, "note: %v; copied histories are shown untrusted\n", err)
				}
			}
			if copiedOnly {
				copied, err := cl.CopiedHistory(c.Context(), args[0], stage, pol)
				if err != nil {
					return err
				}
				if jsonOut {
					return a.json(copied)
				}
				if len(copied) == 0 {
					fmt.Fprintf(a.io.Err, "stage %s has no history copied from another registry\n", stage)
				}
				return a.printCopied(copied, stage)
			}
			records, err := cl.History(c.Context(), args[0], stage)
			if err != nil {
				return err
			}
			if at != "" {
				return a.printAt(records, stage, when, jsonOut)
			}
			if err := a.printHistory(records, stage, jsonOut); err != nil || jsonOut {
				return err
			}
			copied, err := cl.CopiedHistory(c.Context(), args[0], stage, pol)
			if err != nil {
				fmt.Fprintf(a.io.Err, "note: the histories copied from other registries could not be read: %v\n", err)
				return nil
			}
			if len(copied) > 0 {
				fmt.Fprintln(a.io.Out)
			}
			return a.printCopied(copied, stage)
		},
	}
	c.Flags().StringVar(&stage, "stage", "", "the stage (required)")
	c.Flags().StringVar(&at, "at", "", "only what the stage held at this time (RFC 3339)")
	c.Flags().BoolVar(&verify, "verify", false, "verify the stage's signed hash chain against storage (modelreg serve); exit 1 on any gap or edit")
	c.Flags().StringVar(&serverKey, "server-key", "", "with --verify, the registry's public key (PEM) to trust, instead of the one it publishes")
	c.Flags().BoolVar(&copiedOnly, "copied", false, "show only the histories copied from other registries (\"history at <source>\")")
	c.Flags().StringVar(&policyPath, "policy", "", "trust policy whose registries: keys make a copied history trusted, on a registry other than modelreg serve (default "+policy.DefaultPath+" when present)")
	a.addOutputFlag(c)
	return c
}
