package cli

import (
	"fmt"
	"strings"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) deleteCmd() *cobra.Command {
	var reason string
	var takedown bool
	c := &cobra.Command{
		Use:   "delete REF",
		Short: "Delete a version from modelreg serve, recorded",
		Long: `Delete the version REF (a version tag or a digest) from modelreg serve. The
server records the deletion first: a signed tombstone naming who deleted it,
when, its version tags and the deleted manifest's bytes, so the history
still says what existed; its version tags are retired for good (never
reused). The server refuses a version a stage points at, or one that ever
was in a stage the trust policy protects. Stages are not deleted: empty or
move them by promotion.

Another registry would keep no record of the deletion, so delete refuses
it; use that registry's own tools if you must. Blobs are not deleted here:
` + "`modelreg gc`" + ` reclaims them later.

--takedown is the exception for legal or personal-data reasons, for admins
(serve --admin-user; without --htpasswd the local operator): it also deletes
a version that was in a protected stage (never one a stage holds now: move
the stage first), and removes its weights at once. The tombstone keeps the
manifest, so the history still says what ran. --reason is required.`,
		Example: `  modelreg delete localhost:5000/team/fraud:0.9.0 --reason "trained on the wrong split"
  modelreg delete localhost:5000/team/fraud:1.2.0 --takedown --reason "GDPR erasure request 2026-114"`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if takedown {
				t, err := a.client(c, jsonOut).Takedown(c.Context(), args[0], reason)
				if err != nil {
					return err
				}
				if jsonOut {
					return a.json(t)
				}
				fmt.Fprintf(a.io.Err, "took down %s (%s): removed %s in %d blob(s); the tombstone keeps its manifest\n", args[0], t.Digest, progress.Size(t.Bytes), t.Blobs)
				if len(t.Shared) > 0 {
					fmt.Fprintf(a.io.Err, "kept %d blob(s) another version still uses (take those versions down too if their content must go): %s\n", len(t.Shared), strings.Join(t.Shared, ", "))
				}
				return nil
			}
			d, err := a.client(c, jsonOut).Delete(c.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(d)
			}
			fmt.Fprintf(a.io.Err, "deleted %s (%s); the server recorded it\n", d.Reference, d.Digest)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, for the record (required with --takedown)")
	c.Flags().BoolVar(&takedown, "takedown", false, "admins: delete even a version once in a protected stage, and remove its weights now (legal or personal-data reasons)")
	a.addOutputFlag(c)
	return c
}
