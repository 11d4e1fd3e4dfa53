package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/modelapi"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/wire"
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
			ref, repo, err := a.repository(c, args[0])
			if err != nil {
				return err
			}
			if ref.Reference != "" {
				return usageError{fmt.Errorf("list takes a repository without tag or digest, e.g. %s/%s", ref.Registry, ref.Repository)}
			}
			var l *catalog.Listing
			if client, err := modelapi.New(c.Context(), a.remoteOptions(c), ref.Registry); err == nil {
				rows, err := client.Versions(c.Context(), ref.Repository)
				if err != nil {
					return err
				}
				l = listingOf(ref.Registry+"/"+ref.Repository, rows)
			} else if l, err = catalog.List(c.Context(), repo, ref); err != nil {
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

// listingOf turns the model API's rows into a listing: one row per
// version tag, newest first, as catalog.List gives.
func listingOf(repo string, rows []wire.VersionRow) *catalog.Listing {
	l := &catalog.Listing{Repository: repo, Versions: []catalog.VersionSummary{}, Stages: map[string]string{}}
	for _, r := range rows {
		created, _ := time.Parse(time.RFC3339, r.Created)
		for _, s := range r.Stages {
			l.Stages[s] = r.Digest
		}
		for _, v := range r.Versions {
			l.Versions = append(l.Versions, catalog.VersionSummary{Tag: v, Digest: r.Digest, Created: created, Size: r.Size, Files: r.Files, Stages: r.Stages})
		}
	}
	return l
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
