package cli

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/modelapi"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) searchCmd() *cobra.Command {
	var host, orderBy string
	var limit, offset int
	c := &cobra.Command{
		Use:   "search QUERY --registry HOST",
		Short: "Find model versions by metrics, labels, stage... (needs modelreg serve)",
		Long: `Search every model version of a modelreg registry in one request.

The query language (docs/api.md): fields metrics.NAME (numbers), params.NAME,
labels.NAME, framework, description, created (RFC 3339), stage, version,
repository, digest; operators = != < <= > >= like in; and, or, not,
parentheses. Strings are quoted ('fraud' or "fraud"; '' escapes a quote).
An empty query lists everything. Search needs modelreg serve: a plain OCI
registry has no index to query.`,
		Example: `  modelreg search "metrics.accuracy >= 0.9 and stage = 'production'" --registry localhost:5000
  modelreg search "repository like 'team/%' and labels.owner in ('fraud', 'risk')" --order-by "metrics.accuracy desc" --limit 5`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if host == "" {
				host = os.Getenv("MODELREG_REGISTRY")
			}
			if host == "" {
				return usageError{errors.New("--registry HOST is required (or set MODELREG_REGISTRY), e.g. --registry localhost:5000")}
			}
			q := ""
			if len(args) == 1 {
				q = args[0]
			}
			rows, err := a.client(c, true).Search(c.Context(), host, q, orderBy, limit, offset)
			if errors.Is(err, client.ErrNoServer) {
				return fmt.Errorf("search needs modelreg serve: %s is a plain OCI registry without the model index (list one repository with `modelreg list`)", host)
			}
			var qe *modelapi.QueryError
			if errors.As(err, &qe) {
				return usageError{fmt.Errorf("%s\n  %s\n  %s^", qe.Message, q, strings.Repeat(" ", qe.Position))}
			}
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(map[string]any{"versions": rows})
			}
			w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "REPOSITORY\tVERSION\tSTAGES\tCREATED\tFRAMEWORK\tMETRICS\tSIZE")
			for _, r := range rows {
				var ms []string
				for k, v := range r.Metrics {
					ms = append(ms, k+"="+strconv.FormatFloat(v, 'g', 4, 64))
				}
				sort.Strings(ms)
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Repository, orDash(strings.Join(r.Versions, ",")), orDash(strings.Join(r.Stages, ",")),
					orDash(r.Created), orDash(r.Framework), orDash(strings.Join(ms, " ")), progress.Size(r.Size))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(rows) == 0 {
				fmt.Fprintln(a.io.Err, "no version matches")
			}
			return nil
		},
	}
	c.Flags().StringVar(&host, "registry", "", "the modelreg registry (default $MODELREG_REGISTRY)")
	c.Flags().StringVar(&orderBy, "order-by", "", `order: created (default, newest first), framework, repository, version or metrics.NAME, then asc or desc`)
	c.Flags().IntVar(&limit, "limit", 100, "at most this many versions (1 to 1000)")
	c.Flags().IntVar(&offset, "offset", 0, "skip this many (for paging)")
	a.addOutputFlag(c)
	return c
}
