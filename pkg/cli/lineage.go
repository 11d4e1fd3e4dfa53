package cli

import (
	"errors"
	"fmt"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/spf13/cobra"
)

// lineageFlags are the inputs a lineage record names.
type lineageFlags struct {
	datasets        []string
	baseModel, code string
	run             string
	params          []string
	// signKey, when set, stores the record as a signed attestation.
	signKey string
}

func (f *lineageFlags) add(c *cobra.Command, withDatasets bool) {
	if withDatasets {
		c.Flags().StringArrayVar(&f.datasets, "dataset", nil, "training dataset URI, optionally URI@sha256:<hex> (repeatable)")
	}
	c.Flags().StringVar(&f.baseModel, "base-model", "", "the model this one was trained from: an OCI reference, resolved to its digest")
	c.Flags().StringVar(&f.code, "code", "", "training code as REPOSITORY@COMMIT")
	c.Flags().StringVar(&f.run, "run", "", "the training run: a URL or an id")
}

// validate checks the flags that need no registry, so a typo fails before
// any request is made.
func (f *lineageFlags) validate() error {
	for _, d := range f.datasets {
		if _, err := lineage.ParseDataset(d); err != nil {
			return usageError{fmt.Errorf("--%w", err)}
		}
	}
	if f.code != "" {
		if _, err := lineage.ParseCode(f.code); err != nil {
			return usageError{fmt.Errorf("--%w", err)}
		}
	}
	if f.baseModel != "" {
		if _, err := remote.ParseReference(f.baseModel); err != nil {
			return usageError{fmt.Errorf("--base-model: %w", err)}
		}
	}
	if len(f.params) > 0 {
		if _, err := model.ParseKeyValues("--param", f.params); err != nil {
			return usageError{err}
		}
	}
	return nil
}

func (f *lineageFlags) empty() bool {
	return len(f.datasets) == 0 && f.baseModel == "" && f.code == "" && f.run == "" && len(f.params) == 0
}

// options turns the flags into the library's lineage options; the key
// for --sign is loaded here (its password from COSIGN_PASSWORD).
func (f *lineageFlags) options() (*client.LineageOptions, error) {
	o := &client.LineageOptions{Datasets: f.datasets, BaseModel: f.baseModel, Code: f.code, Run: f.run}
	if len(f.params) > 0 {
		params, err := model.ParseKeyValues("--param", f.params)
		if err != nil {
			return nil, usageError{err}
		}
		o.Params = params
	}
	return o, nil
}

func (a *app) lineageCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "lineage",
		Short: "Record and walk what a version was made from",
	}
	var f lineageFlags
	add := &cobra.Command{
		Use:   "add REF [--dataset URI[@sha256:HEX]]... [--base-model REF] [--code REPO@COMMIT] [--run URL] [--param k=v]...",
		Short: "Attach a lineage record to a version",
		Long: `Attach a lineage record (an in-toto Statement with modelreg's lineage
predicate, docs/lineage.md) to the version REF as a referrer. The version's
digest and signatures do not change; records can be added at any time, and
each adds to what is known.`,
		Example: `  modelreg lineage add localhost:5000/team/fraud:1.4.0 --dataset s3://data/train.parquet@sha256:... \
    --base-model localhost:5000/team/base:2.0.0 --code https://github.com/acme/train@4f2a9c1 --run https://ci/runs/812`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if f.empty() {
				return usageError{fmt.Errorf("nothing to record: give --dataset, --base-model, --code, --run or --param")}
			}
			if err := f.validate(); err != nil {
				return err
			}
			o, err := f.options()
			if err != nil {
				return err
			}
			if f.signKey != "" {
				pw, err := a.password(false)
				if err != nil {
					return err
				}
				priv, err := key.LoadPrivate(f.signKey, pw)
				if err != nil {
					return err
				}
				o.SignWith = &priv
			}
			d, err := a.client(c, true).AddLineage(c.Context(), args[0], *o)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Err, "lineage recorded for %s\n", args[0])
			fmt.Fprintln(a.io.Out, d)
			return nil
		},
	}
	f.add(add, true)
	add.Flags().StringArrayVar(&f.params, "param", nil, "free-form parameter KEY=VALUE for the record (repeatable)")
	var sign bool
	add.Flags().BoolVar(&sign, "sign", false, "store it as a signed attestation (cosign-verifiable), with --key")
	add.Flags().StringVar(&f.signKey, "key", "", "cosign private key for --sign (password from COSIGN_PASSWORD)")
	add.PreRunE = func(c *cobra.Command, args []string) error {
		if sign != (f.signKey != "") {
			return usageError{errors.New("--sign and --key go together: --sign --key cosign.key")}
		}
		return nil
	}
	root.AddCommand(add)
	a.lineageShow(root)
	return root
}

// lineageShow makes `modelreg lineage REF --up|--down` walk the graph.
func (a *app) lineageShow(c *cobra.Command) {
	var up, down bool
	var depth int
	var format, of, host, policyPath string
	c.Use = "lineage [REF] (--up | --down) [--format tree|json|dot|mermaid]"
	c.Long = `Walk a version's lineage. --up follows its inputs: datasets, code, and the
base model, then the base model's inputs, across repositories and registries,
reading lineage records, lineage attestations and SLSA provenance (signed ones
are marked [signed] when a key of the trust policy verified them). --down
lists the versions made from this one (or from --of URI-or-DIGEST), and their
descendants, from modelreg serve's lineage index: a plain registry has no way
to find what refers to a model from elsewhere. A cycle (A from B, B from A)
ends the walk with a note; so does --depth.

Subcommand: lineage add records lineage.`
	c.Example = `  modelreg lineage localhost:5000/team/tuned:1.0.0 --up
  modelreg lineage localhost:5000/team/base:1.0.0 --down --format mermaid
  modelreg lineage --down --of s3://data/train.parquet --registry localhost:5000`
	c.Args = cobra.MaximumNArgs(1)
	c.RunE = func(c *cobra.Command, args []string) error {
		if up == down {
			return usageError{errors.New("choose --up (ancestors) or --down (descendants)")}
		}
		if format != "tree" && format != "json" && format != "dot" && format != "mermaid" {
			return usageError{fmt.Errorf("--format %q: expected tree, json, dot or mermaid", format)}
		}
		var root *lineage.Node
		var err error
		cl := a.client(c, true)
		switch {
		case up:
			if len(args) != 1 {
				return usageError{errors.New("--up needs a REF")}
			}
			pol, err := policy.LoadDefault(policyPath)
			if err != nil {
				return err
			}
			if root, err = cl.LineageUp(c.Context(), args[0], pol.Trusted(), depth); err != nil {
				return err
			}
		default:
			ref := ""
			switch {
			case len(args) == 1:
				ref = args[0]
			case of != "" && host != "":
			default:
				return usageError{errors.New("--down needs a REF, or --of URI-or-DIGEST with --registry HOST")}
			}
			if root, err = cl.LineageDown(c.Context(), ref, of, host, depth); errors.Is(err, client.ErrNoServer) {
				return fmt.Errorf("--down needs modelreg serve (--up works anywhere): %w", err)
			} else if err != nil {
				return err
			}
		}
		switch format {
		case "json":
			return a.json(root)
		case "dot":
			root.WriteDot(a.io.Out)
		case "mermaid":
			root.WriteMermaid(a.io.Out)
		default:
			root.WriteTree(a.io.Out)
		}
		return nil
	}
	f := c.Flags()
	f.BoolVar(&up, "up", false, "walk ancestors (what it was made from)")
	f.BoolVar(&down, "down", false, "walk descendants (what was made from it); needs modelreg serve")
	f.IntVar(&depth, "depth", 10, "stop after this many levels")
	f.StringVar(&format, "format", "tree", "tree, json, dot or mermaid")
	f.StringVar(&of, "of", "", "with --down and no REF: a dataset URI or a digest")
	f.StringVar(&host, "registry", "", "with --of: the modelreg serve registry")
	f.StringVar(&policyPath, "policy", "", "trust policy whose keys verify signed lineage (default "+policy.DefaultPath+")")
}
