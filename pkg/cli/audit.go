package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/spf13/cobra"
)

func (a *app) auditCmd() *cobra.Command {
	var format, out, policyPath string
	c := &cobra.Command{
		Use:   "audit REPO[:VERSION] [--format md|json|html] [-o FILE]",
		Short: "Write the compliance report of a model or one version",
		Long: `Write one self-contained report a compliance team can archive: for each
version (or only VERSION), its inputs (lineage records, signed attestations,
SLSA provenance), its evaluations, its signatures with key fingerprints, and
every stage it entered and left, with time, actor and reason, oldest first.
Signatures and signed lineage are checked against the keys of the trust
policy (--policy, else .modelreg/policy.yaml).`,
		Example: `  modelreg audit localhost:5000/team/fraud --format html -o fraud-audit.html
  modelreg audit localhost:5000/team/fraud:1.4.0 --format json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if format != "md" && format != "json" && format != "html" {
				return usageError{fmt.Errorf("--format %q: expected md, json or html", format)}
			}
			pol, err := policy.LoadDefault(policyPath)
			if err != nil {
				return err
			}
			report, err := a.client(c, true).Audit(c.Context(), args[0], pol)
			if err != nil {
				return err
			}
			var w io.Writer = a.io.Out
			var f *os.File
			if out != "" {
				if f, err = os.Create(out); err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			switch format {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				err = enc.Encode(report)
			case "html":
				err = report.HTML(w)
			default:
				report.Markdown(w)
			}
			if err != nil {
				return err
			}
			if f != nil {
				if err := f.Close(); err != nil {
					return err
				}
				fmt.Fprintf(a.io.Err, "report of %d version(s) written to %s\n", len(report.Versions), out)
			}
			return nil
		},
	}
	c.Flags().StringVar(&format, "format", "md", "md, json or html")
	c.Flags().StringVarP(&out, "output-file", "o", "", "write to FILE instead of standard output")
	c.Flags().StringVar(&policyPath, "policy", "", "trust policy whose keys check signatures (default "+policy.DefaultPath+")")
	return c
}
