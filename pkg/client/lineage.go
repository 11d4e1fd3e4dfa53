package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/audit"
	"github.com/modelreg/modelreg/pkg/evaluation"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// LineageOptions say what a version was made from.
type LineageOptions struct {
	// Datasets are URI[@sha256:HEX] (lineage.ParseDataset).
	Datasets []string
	// BaseModel is the model it was fine-tuned from (REGISTRY/REPO:TAG),
	// recorded by digest.
	BaseModel string
	// Code is REPO@COMMIT (lineage.ParseCode); Run a training run's URL.
	Code, Run string
	// Params are free-form KEY=VALUE parameters of the record.
	Params map[string]string
	// SignWith, when set, stores the record as a signed attestation
	// (cosign-verifiable) instead of a plain record.
	SignWith *key.Private
}

// Empty reports whether o records nothing.
func (o *LineageOptions) Empty() bool {
	return o == nil || len(o.Datasets) == 0 && o.BaseModel == "" && o.Code == "" && o.Run == "" && len(o.Params) == 0
}

// predicate resolves o into a lineage predicate; the base model is looked
// up in its registry so the record names its digest.
func (c *Client) predicate(ctx context.Context, o *LineageOptions) (lineage.Predicate, error) {
	var p lineage.Predicate
	for _, d := range o.Datasets {
		in, err := lineage.ParseDataset(d)
		if err != nil {
			return p, usage(err)
		}
		p.Inputs = append(p.Inputs, in)
	}
	if o.BaseModel != "" {
		r, repo, err := c.Repository(o.BaseModel)
		if err != nil {
			return p, fmt.Errorf("base model: %w", err)
		}
		v, err := transfer.Fetch(ctx, repo, r)
		if err != nil {
			return p, fmt.Errorf("base model: %w", err)
		}
		p.Inputs = append(p.Inputs, lineage.ModelInput(r.Registry+"/"+r.Repository, v.Descriptor.Digest))
	}
	if o.Code != "" {
		in, err := lineage.ParseCode(o.Code)
		if err != nil {
			return p, usage(err)
		}
		p.Inputs = append(p.Inputs, in)
	}
	if o.Run != "" {
		p.Run = &lineage.Run{URL: o.Run}
	}
	if len(o.Params) > 0 {
		p.Parameters = o.Params
	}
	return p, nil
}

// AddLineage records what the version ref was made from, as a referrer
// (its digest and signatures do not change), and returns the record's digest.
func (c *Client) AddLineage(ctx context.Context, ref string, o LineageOptions) (string, error) {
	if o.Empty() {
		return "", usage(fmt.Errorf("nothing to record: give datasets, a base model, code, a run or parameters"))
	}
	p, err := c.predicate(ctx, &o)
	if err != nil {
		return "", err
	}
	r, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return "", err
	}
	return c.writeLineage(ctx, r, repo, v.Descriptor.Digest, p, &o)
}

func (c *Client) writeLineage(ctx context.Context, r registry.Reference, repo registry.Repository, subject digest.Digest, p lineage.Predicate, o *LineageOptions) (string, error) {
	desc, err := repo.Resolve(ctx, subject.String())
	if err != nil {
		return "", remote.Explain(err, r.String())
	}
	st := lineage.New(r.Registry+"/"+r.Repository, subject, p)
	if o.SignWith != nil {
		blob, err := json.Marshal(st)
		if err != nil {
			return "", err
		}
		d, err := signature.Attest(ctx, repo, desc, *o.SignWith, mediatypes.PredicateLineage, blob, time.Time{})
		if err != nil {
			return "", fmt.Errorf("writing the lineage attestation: %w", remote.Explain(err, r.String()))
		}
		return d.Digest.String(), nil
	}
	d, err := lineage.Write(ctx, repo, desc, st)
	if err != nil {
		return "", fmt.Errorf("writing the lineage record: %w", remote.Explain(err, r.String()))
	}
	return d.Digest.String(), nil
}

// LineageUp walks what the version ref was made from, across repositories
// and registries, to depth levels; trusted keys mark signed lineage. A
// model input recorded at another registry is read from ref's registry
// when it holds the digest (same repository path, then, on modelreg
// serve, any repository by its index): the recorded host is a hint, so a
// walk over copied models does not depend on the registry they came from.
func (c *Client) LineageUp(ctx context.Context, ref string, trusted []key.Public, depth int) (*lineage.Node, error) {
	r, _, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	open := func(r registry.Reference) (registry.Repository, error) { return c.opts.Remote.Repository(r) }
	w := &lineage.Walker{Open: open, Trusted: trusted, MaxDepth: depth, Home: r.Registry}
	if api, err := c.Server(ctx, r.Registry); err == nil {
		w.Locate = func(ctx context.Context, d string) (string, error) {
			dg, err := digest.Parse(d)
			if err != nil {
				return "", err
			}
			rows, err := api.Search(ctx, "digest = '"+dg.String()+"'", "repository", 1, 0)
			if err != nil || len(rows) == 0 {
				return "", err
			}
			return rows[0].Repository, nil
		}
	}
	return w.Up(ctx, r, v.Descriptor.Digest.String())
}

// LineageDown walks what was made from the version ref, or, when ref is
// "", from of (a dataset URI or a digest) on host: it needs modelreg
// serve's lineage index, as a plain registry cannot tell what refers to a
// model from elsewhere.
func (c *Client) LineageDown(ctx context.Context, ref, of, host string, depth int) (*lineage.Node, error) {
	var root *lineage.Node
	if ref != "" {
		r, _, v, err := c.Version(ctx, ref)
		if err != nil {
			return nil, err
		}
		host = r.Registry
		root = &lineage.Node{Kind: lineage.KindModel, Ref: r.Registry + "/" + r.Repository + "@" + v.Descriptor.Digest.String(), Digest: v.Descriptor.Digest.String()}
	} else {
		root = &lineage.Node{Kind: lineage.KindDataset, Ref: of}
	}
	api, err := c.Server(ctx, host)
	if errors.Is(err, ErrNoServer) {
		return nil, fmt.Errorf("%w: %s is a plain OCI registry, which cannot tell what was made from a model (walking ancestors works anywhere)", ErrNoServer, host)
	}
	if err != nil {
		return nil, err
	}
	err = lineage.Down(ctx, root, func(ctx context.Context, of string) ([]*lineage.Node, error) {
		edges, err := api.Descendants(ctx, of)
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
	return root, err
}

// Evaluate records metrics measured after training as a referrer of the
// version ref, and returns the record's digest.
func (c *Client) Evaluate(ctx context.Context, ref string, metrics map[string]float64, dataset string) (string, error) {
	_, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return "", err
	}
	d, err := evaluation.Write(ctx, repo, v.Descriptor, evaluation.Record{Metrics: metrics, Dataset: dataset, Actor: c.opts.Actor, Time: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// Audit builds the compliance report of a repository (or, when ref names
// a version, of that version): metadata, lineage, evaluations, signatures
// checked against the keys of pol (nil: none), the promotion history (the server's signed
// history on modelreg serve) and the stage heads resting on a key pol
// revokes.
func (c *Client) Audit(ctx context.Context, ref string, pol *policy.Policy) (*audit.Report, error) {
	r, repo, err := c.Repository(ref)
	if err != nil {
		return nil, err
	}
	var only digest.Digest
	if r.Reference != "" {
		v, err := transfer.Fetch(ctx, repo, r)
		if err != nil {
			return nil, err
		}
		only = v.Descriptor.Digest
	}
	var serverKey []byte
	api, apiErr := c.Server(ctx, r.Registry)
	if apiErr == nil {
		pub, err := api.ServerKey(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the registry's record key: %w", err)
		}
		serverKey = pub
	}
	rep, err := audit.Build(ctx, repo, r, only, pol.Trusted(), serverKey)
	if err != nil {
		return nil, err
	}
	rep.CheckRevoked(pol, time.Now())
	if apiErr == nil {
		// modelreg serve keeps the stage moves it refused (events).
		for after := int64(0); ; {
			page, err := api.Events(ctx, r.Repository, wire.EventPromotionRefused, after)
			if err != nil {
				return nil, fmt.Errorf("reading the refused stage moves: %w", err)
			}
			for _, rf := range audit.RefusalsFrom(page.Events) {
				if only == "" || rf.Digest == only.String() {
					rep.AddRefusals([]audit.Refusal{rf})
				}
			}
			if page.Next == 0 {
				break
			}
			after = page.Next
		}
	}
	return rep, nil
}
