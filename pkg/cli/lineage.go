package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/modelapi"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
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
			return usageError{err}
		}
	}
	if f.code != "" {
		if _, err := lineage.ParseCode(f.code); err != nil {
			return usageError{err}
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
	st := lineage.New(ref.Registry+"/"+ref.Repository, subject, p)
	var d ocispec.Descriptor
	if f.signKey != "" {
		pw, err := a.password(false)
		if err != nil {
			return "", err
		}
		priv, err := key.LoadPrivate(f.signKey, pw)
		if err != nil {
			return "", err
		}
		blob, err := json.Marshal(st)
		if err != nil {
			return "", err
		}
		d, err = signature.Attest(ctx, repo, desc, priv, mediatypes.PredicateLineage, blob, time.Time{})
		if err != nil {
			return "", fmt.Errorf("writing the lineage attestation: %w", remote.Explain(err, ref.String()))
		}
		return d.Digest.String(), nil
	}
	d, err = lineage.Write(ctx, repo, desc, st)
	if err != nil {
		return "", fmt.Errorf("writing the lineage record: %w", remote.Explain(err, ref.String()))
	}
	return d.Digest.String(), nil
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
			ref, repo, v, err := a.version(c, args[0])
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
		switch {
		case up:
			if len(args) != 1 {
				return usageError{errors.New("--up needs a REF")}
			}
			pol, err := policy.LoadDefault(policyPath)
			if err != nil {
				return err
			}
			ref, _, v, err := a.version(c, args[0])
			if err != nil {
				return err
			}
			ro := a.remoteOptions(c)
			open := func(r registry.Reference) (registry.Repository, error) { return ro.Repository(r) }
			w := &lineage.Walker{Open: open, Trusted: pol.Trusted(), MaxDepth: depth}
			if root, err = w.Up(c.Context(), ref, v.Descriptor.Digest.String()); err != nil {
				return err
			}
		default:
			if len(args) == 1 {
				ref, _, v, err := a.version(c, args[0])
				if err != nil {
					return err
				}
				host = ref.Registry
				root = &lineage.Node{Kind: lineage.KindModel, Ref: ref.Registry + "/" + ref.Repository + "@" + v.Descriptor.Digest.String(), Digest: v.Descriptor.Digest.String()}
			} else if of != "" && host != "" {
				root = &lineage.Node{Kind: lineage.KindDataset, Ref: of}
			} else {
				return usageError{errors.New("--down needs a REF, or --of URI-or-DIGEST with --registry HOST")}
			}
			client, err := modelapi.New(c.Context(), a.remoteOptions(c), host)
			if errors.Is(err, modelapi.ErrNoServer) {
				return fmt.Errorf("--down needs modelreg serve: %s is a plain OCI registry, which cannot tell what was made from a model (--up works anywhere)", host)
			}
			if err != nil {
				return err
			}
			err = lineage.Down(c.Context(), root, func(ctx context.Context, of string) ([]*lineage.Node, error) {
				edges, err := client.Descendants(ctx, of)
				if err != nil {
					return nil, err
				}
				var out []*lineage.Node
				seen := map[string]bool{}
				for _, e := range edges {
					ref := host + "/" + e.Repo + "@" + e.Digest
					if !seen[ref] {
						seen[ref] = true
						out = append(out, &lineage.Node{Kind: lineage.KindModel, Ref: ref, Digest: e.Digest})
					}
				}
				return out, nil
			}, depth)
			if err != nil {
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
