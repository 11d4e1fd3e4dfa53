package cli

import (
	"context"
	"fmt"

	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
)

// lineageFlags are the inputs a lineage record names.
type lineageFlags struct {
	datasets        []string
	baseModel, code string
	run             string
	params          []string
}

func (f *lineageFlags) add(c *cobra.Command, withDatasets bool) {
	if withDatasets {
		c.Flags().StringArrayVar(&f.datasets, "dataset", nil, "training dataset URI, optionally URI@sha256:<hex> (repeatable)")
	}
	c.Flags().StringVar(&f.baseModel, "base-model", "", "the model this one was trained from: an OCI reference, resolved to its digest")
	c.Flags().StringVar(&f.code, "code", "", "training code as REPOSITORY@COMMIT")
	c.Flags().StringVar(&f.run, "run", "", "the training run: a URL or an id")
}

func (f *lineageFlags) empty() bool {
	return len(f.datasets) == 0 && f.baseModel == "" && f.code == "" && f.run == "" && len(f.params) == 0
}

// predicate resolves the flags into a lineage predicate; the base model is
// looked up in its registry so the record names its digest.
func (a *app) predicate(ctx context.Context, c *cobra.Command, f *lineageFlags) (lineage.Predicate, error) {
	var p lineage.Predicate
	for _, d := range f.datasets {
		in, err := lineage.ParseDataset(d)
		if err != nil {
			return p, usageError{err}
		}
		p.Inputs = append(p.Inputs, in)
	}
	if f.baseModel != "" {
		ref, err := remote.ParseReference(f.baseModel)
		if err != nil {
			return p, usageError{fmt.Errorf("--base-model: %w", err)}
		}
		repo, err := a.remoteOptions(c).Repository(ref)
		if err != nil {
			return p, err
		}
		v, err := transfer.Fetch(ctx, repo, ref)
		if err != nil {
			return p, fmt.Errorf("--base-model: %w", err)
		}
		p.Inputs = append(p.Inputs, lineage.ModelInput(ref.Registry+"/"+ref.Repository, v.Descriptor.Digest))
	}
	if f.code != "" {
		in, err := lineage.ParseCode(f.code)
		if err != nil {
			return p, usageError{err}
		}
		p.Inputs = append(p.Inputs, in)
	}
	if f.run != "" {
		p.Run = &lineage.Run{URL: f.run}
	}
	if len(f.params) > 0 {
		params, err := model.ParseKeyValues("--param", f.params)
		if err != nil {
			return p, usageError{err}
		}
		p.Parameters = params
	}
	return p, nil
}

// attachLineage writes a lineage record about subject.
func (a *app) attachLineage(ctx context.Context, c *cobra.Command, ref registry.Reference, repo registry.Repository, subject digest.Digest, f *lineageFlags) (string, error) {
	p, err := a.predicate(ctx, c, f)
	if err != nil {
		return "", err
	}
	desc, err := repo.Resolve(ctx, subject.String())
	if err != nil {
		return "", remote.Explain(err, ref.String())
	}
	d, err := lineage.Write(ctx, repo, desc, lineage.New(ref.Registry+"/"+ref.Repository, subject, p))
	if err != nil {
		return "", fmt.Errorf("writing the lineage record: %w", remote.Explain(err, ref.String()))
	}
	return d.Digest.String(), nil
}

func (a *app) lineageCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "lineage",
		Short: "Record what a version was made from",
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
			ref, repo, err := a.repository(c, args[0])
			if err != nil {
				return err
			}
			v, err := transfer.Fetch(c.Context(), repo, ref)
			if err != nil {
				return err
			}
			d, err := a.attachLineage(c.Context(), c, ref, repo, v.Descriptor.Digest, &f)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Err, "lineage recorded for %s@%s\n", ref.Repository, v.Descriptor.Digest)
			fmt.Fprintln(a.io.Out, d)
			return nil
		},
	}
	f.add(add, true)
	add.Flags().StringArrayVar(&f.params, "param", nil, "free-form parameter KEY=VALUE for the record (repeatable)")
	root.AddCommand(add)
	return root
}
