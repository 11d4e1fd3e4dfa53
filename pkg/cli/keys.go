package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/spf13/cobra"
)

func (a *app) keysCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Key lifecycle: find what rests on keys the trust policy revokes",
	}
	c.AddCommand(a.keysRevokedCmd())
	return c
}

func (a *app) keysRevokedCmd() *cobra.Command {
	var policyPath string
	c := &cobra.Command{
		Use:   "revoked REGISTRY[/REPO]",
		Short: "List the stage heads that rest on a key the trust policy revokes",
		Long: `Check every stage of REPO (or of every repository in the catalog of
REGISTRY) against the keys the trust policy revokes: a stage head is listed
when the promotion record that put its version there names a key revoked
since, or when the version no longer meets the stage's rule because a
signature it relied on is by a revoked key. Those versions were approved by
a key that can no longer be trusted: re-sign them with a valid key, or
promote or roll back to a version that does not rest on it.

Exits 0 when no stage head rests on a revoked key, 1 when some do (they are
listed), 2 on a usage error. The policy comes from --policy, else
.modelreg/policy.yaml; see docs/policy.md, "Revoking a key".`,
		Example: `  modelreg keys revoked localhost:5000/team/fraud --policy policy.yaml
  modelreg keys revoked localhost:5000 --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			pol, err := requiredPolicy(policyPath)
			if err != nil {
				return err
			}
			rep, err := a.client(c, true).RevokedHeads(c.Context(), args[0], pol)
			if err != nil {
				return err
			}
			if jsonOut {
				if err := a.json(rep); err != nil {
					return err
				}
			} else {
				inForce := 0
				for _, k := range rep.RevokedKeys {
					if !rep.Checked.Before(k.Since) {
						inForce++
					}
				}
				fmt.Fprintf(a.io.Err, "%d stage head(s) in %d repositories checked against %d revoked key(s)\n", len(rep.Heads), rep.Repositories, inForce)
				a.printFlaggedHeads(rep.Heads)
			}
			if rep.Flagged > 0 {
				return fmt.Errorf("%d stage head(s) rest on a revoked key; re-sign their versions with a valid key, or move the stages to versions that do not rest on it", rep.Flagged)
			}
			return nil
		},
	}
	c.Flags().StringVar(&policyPath, "policy", "", "trust policy naming the revoked keys (default "+policy.DefaultPath+")")
	a.addOutputFlag(c)
	return c
}

// printFlaggedHeads lists the stage heads that rest on a revoked key.
func (a *app) printFlaggedHeads(heads []policy.Head) {
	var flagged []policy.Head
	for _, h := range heads {
		if h.Flagged {
			flagged = append(flagged, h)
		}
	}
	if len(flagged) == 0 {
		return
	}
	fmt.Fprintln(a.io.Out)
	w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STAGE\tDIGEST\tPROMOTED\tREVOKED KEYS\tSTILL MEETS POLICY\tWHY")
	for _, h := range flagged {
		var names []string
		for _, k := range h.RevokedKeys {
			names = append(names, k.Name)
		}
		when := "-"
		if !h.RecordTime.IsZero() {
			when = h.RecordTime.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s:%s\t%s\t%s\t%s\t%v\t%s\n", h.Repository, h.Stage, shortDigest(h.Digest), when, strings.Join(names, ","), h.Satisfied, h.Why)
	}
	w.Flush()
}

// requiredPolicy loads the trust policy a command cannot do without:
// --policy, else the default path; none at all is a usage error.
func requiredPolicy(path string) (*policy.Policy, error) {
	pol, err := policy.LoadDefault(path)
	if err != nil {
		return nil, err
	}
	if pol == nil {
		return nil, usageError{fmt.Errorf("no trust policy: pass --policy FILE or create %s (see docs/policy.md)", policy.DefaultPath)}
	}
	return pol, nil
}
