package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) deleteCmd() *cobra.Command {
	var reason string
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
it; use that registry's own tools if you must. Blobs are not deleted.`,
		Example: `  modelreg delete localhost:5000/team/fraud:0.9.0 --reason "trained on the wrong split"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
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
	c.Flags().StringVar(&reason, "reason", "", "why, for the record")
	a.addOutputFlag(c)
	return c
}
