package cli

import (
	"fmt"
	"strings"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) gcCmd() *cobra.Command {
	var o client.GCOptions
	c := &cobra.Command{
		Use:   "gc REGISTRY",
		Short: "Apply retention rules and reclaim blob space on modelreg serve, online",
		Long: `Ask a running modelreg serve to apply the retention rules of its
configuration (serve --config, section retention) and then collect the blobs
nothing refers to any more, while it keeps serving.

Retention deletes the versions its rules let go (per repository pattern:
keep the newest N, keep those younger than D). It never deletes a version a
stage points at, one that ever entered a stage, or a lineage ancestor of a
version it keeps. Each deletion is recorded like ` + "`modelreg delete`" + `: a
signed tombstone whose reason names the rule; the version tag is retired.

The collector then removes every blob no manifest in the registry names
(weights of deleted versions, abandoned uploads' blobs). Manifests and
records are never collected: a deleted version's manifest stays beside its
tombstone. Blobs written less than the grace period ago (retention.grace,
default 1h) are kept, so a push in flight is never broken; they go in a later
collection if nothing names them by then.

--dry-run changes nothing and lists what would go: versions and blob bytes.
The server runs the same rules on its own every retention.interval.
On another registry gc refuses: distribution collects only with the registry
stopped (` + "`registry garbage-collect`" + `). With --htpasswd on the server, gc needs
a user who may write. See docs/lifecycle.md.`,
		Example: `  modelreg gc localhost:5000 --dry-run
  modelreg gc localhost:5000 --repo 'team/**'
  modelreg gc localhost:5000 --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			rep, err := a.client(c, jsonOut).GC(c.Context(), args[0], o)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(rep)
			}
			w := a.io.Out
			verb, would, deleted := "deleted", "deleted", "reclaimed"
			if rep.DryRun {
				verb, would, deleted = "would go", "would delete", "would reclaim"
			}
			failed := 0
			for _, v := range rep.Versions {
				tags := strings.Join(v.Tags, ",")
				if tags == "" {
					tags = "(untagged)"
				}
				if v.Error != "" {
					failed++
					fmt.Fprintf(w, "kept     %s:%s %s: not deleted: %s\n", v.Repository, tags, v.Digest, v.Error)
					continue
				}
				fmt.Fprintf(w, "%-8s %s:%s %s (%s)\n", verb, v.Repository, tags, v.Digest, v.Reason)
			}
			fmt.Fprintf(w, "retention: %s %d version(s), kept %d\n", would, len(rep.Versions)-failed, rep.Kept)
			fmt.Fprintf(w, "blobs: %s %s in %d blob(s) (%d manifests read)", deleted, progress.Size(rep.Bytes), rep.Blobs, rep.Manifests)
			if rep.YoungBlobs > 0 {
				fmt.Fprintf(w, "; spared %s in %d blob(s) younger than the grace period (%s)", progress.Size(rep.YoungBytes), rep.YoungBlobs, rep.Grace)
			}
			fmt.Fprintln(w)
			if failed > 0 {
				return fmt.Errorf("%d version(s) could not be deleted (listed above); they are kept", failed)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&o.DryRun, "dry-run", false, "change nothing: list the versions and blob bytes that would go")
	c.Flags().StringVar(&o.Repositories, "repo", "", "limit retention to repositories matching this pattern (team/* one segment, team/** any depth); blobs are collected registry-wide")
	a.addOutputFlag(c)
	return c
}
