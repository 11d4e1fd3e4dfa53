package cli

import (
	"fmt"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/spf13/cobra"
)

func (a *app) pullCmd() *cobra.Command {
	var (
		dir         string
		concurrency int
	)
	c := &cobra.Command{
		Use:   "pull REF -o DIR",
		Short: "Download a model version into a new directory",
		Long: `Pull the version REF into DIR, restoring its file tree and file modes.

Every blob is checked against its digest while it is written. Files go to a
temporary directory beside DIR that is renamed to DIR only when all of them
are verified: a failed or interrupted pull leaves nothing at DIR. DIR must
not exist or must be empty. File paths recorded in the artifact are checked
first: an absolute path or one with .. is refused before anything is written.

REF may name a version, a stage (production) or a digest (@sha256:...).`,
		Example: `  modelreg pull localhost:5000/team/fraud:production -o ./fraud-model
  modelreg pull localhost:5000/team/fraud@sha256:4f2a... -o ./model --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			if dir == "" {
				return usageError{fmt.Errorf("-o DIR is required: the directory to create, e.g. -o ./model")}
			}
			ref, repo, err := a.repository(c, args[0])
			if err != nil {
				return err
			}
			res, err := transfer.Pull(c.Context(), repo, ref, dir, transfer.PullOptions{Concurrency: concurrency, Progress: a.reporter(jsonOut)})
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(res)
			}
			fmt.Fprintf(a.io.Err, "pulled %s: %d files, %s into %s\n", res.Reference, res.Files, progress.Size(res.Size), res.Dir)
			fmt.Fprintln(a.io.Out, res.Digest)
			return nil
		},
	}
	c.Flags().StringVarP(&dir, "output-dir", "o", "", "directory to create with the model's files (required)")
	c.Flags().IntVar(&concurrency, "concurrency", 0, "files downloaded at once (default: one per CPU, at least 4)")
	a.addOutputFlag(c)
	return c
}
