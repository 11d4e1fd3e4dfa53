package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) listCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "list REPO",
		Short: "List a model's versions and the stages pointing at them",
		Long: `List the versions of a model repository, newest first, with digest, creation
time, size and the stage tags (staging, production, ...) pointing at each.
Works on any OCI registry through the tags list. Tags that look like
versions but hold something other than a model are reported as skipped.`,
		Example: `  modelreg list localhost:5000/team/fraud
  modelreg list localhost:5000/team/fraud --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			l, err := a.client(c, true).List(c.Context(), args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(l)
			}
			if len(l.Versions) == 0 {
				fmt.Fprintf(a.io.Err, "%s has no model versions\n", l.Repository)
			}
			w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tDIGEST\tCREATED\tSIZE\tFILES\tSTAGES")
			for _, v := range l.Versions {
				created := "-"
				if !v.Created.IsZero() {
					created = v.Created.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", v.Tag, shortDigest(v.Digest), created, progress.Size(v.Size), v.Files, orDash(strings.Join(v.Stages, ",")))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(l.Skipped) > 0 {
				fmt.Fprintf(a.io.Err, "skipped (not models): %s\n", strings.Join(l.Skipped, ", "))
			}
			return nil
		},
	}
	a.addOutputFlag(c)
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
