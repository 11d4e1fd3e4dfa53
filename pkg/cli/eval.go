package cli

import (
	"errors"
	"fmt"
	"maps"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/evaluation"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/spf13/cobra"
)

func (a *app) evalCmd() *cobra.Command {
	root := &cobra.Command{Use: "eval", Short: "Record metrics measured after training"}
	var metrics []string
	var file, dataset, actor string
	add := &cobra.Command{
		Use:   "add REF (--metric KEY=NUMBER... | --file results.json) [--dataset URI[@sha256:HEX]]",
		Short: "Attach an evaluation to a version",
		Long: `Attach an evaluation (metrics measured on some dataset after training) to the
version REF as a referrer; its digest and signatures do not change. A trust
policy can require evaluation bounds (accuracy >= 0.9) before a stage accepts
the version. --file reads a JSON object of metrics ({"accuracy": 0.93}) or an
object with a "metrics" member of that form.`,
		Example: `  modelreg eval add localhost:5000/team/fraud:1.4.0 --metric accuracy=0.94 --metric recall=0.81 --dataset s3://data/holdout.parquet@sha256:...
  modelreg eval add localhost:5000/team/fraud:1.4.0 --file results.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			values, err := model.ParseMetrics("--metric", metrics)
			if err != nil {
				return usageError{err}
			}
			if file != "" {
				fromFile, err := evaluation.ReadFile(file)
				if err != nil {
					return err
				}
				maps.Copy(values, fromFile)
			}
			if len(values) == 0 {
				return usageError{errors.New("no metrics: give --metric KEY=NUMBER or --file results.json")}
			}
			if dataset != "" {
				if _, err := lineage.ParseDataset(dataset); err != nil {
					return usageError{fmt.Errorf("--%w", err)}
				}
			}
			o := client.DefaultOptions()
			o.Remote = a.remoteOptions(c)
			if actor != "" {
				o.Actor = actor
			}
			d, err := client.New(o).Evaluate(c.Context(), args[0], values, dataset)
			if err != nil {
				return fmt.Errorf("writing the evaluation: %w", err)
			}
			fmt.Fprintf(a.io.Err, "evaluation recorded for %s\n", args[0])
			fmt.Fprintln(a.io.Out, d)
			return nil
		},
	}
	add.Flags().StringArrayVar(&metrics, "metric", nil, "metric KEY=NUMBER (repeatable)")
	add.Flags().StringVar(&file, "file", "", "JSON file of metrics")
	add.Flags().StringVar(&dataset, "dataset", "", "the evaluation dataset, URI[@sha256:HEX]")
	add.Flags().StringVar(&actor, "actor", "", "who evaluated (default $MODELREG_ACTOR, else user@host)")
	root.AddCommand(add)
	return root
}
