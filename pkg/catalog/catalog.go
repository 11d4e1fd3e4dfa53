// Package catalog answers "what is in this model repository": its versions,
// the stages pointing at them, and the tags of one version. It works on any
// OCI registry through the tags list and manifest HEADs.
package catalog

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"oras.land/oras-go/v2/content"

	"github.com/modelreg/modelreg/pkg/weights"

	"github.com/modelreg/modelreg/pkg/evaluation"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry"
)

// concurrency bounds the manifest requests made at once.
const concurrency = 8

// Tags lists every tag of the repository, following pagination.
func Tags(ctx context.Context, repo registry.TagLister) ([]string, error) {
	var all []string
	err := repo.Tags(ctx, "", func(tags []string) error {
		all = append(all, tags...)
		return nil
	})
	return all, err
}

// Resolve maps each tag to the digest it names.
func Resolve(ctx context.Context, repo registry.Repository, tags []string) (map[string]digest.Digest, error) {
	out := make(map[string]digest.Digest, len(tags))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for _, t := range tags {
		g.Go(func() error {
			d, err := repo.Resolve(gctx, t)
			if remote.IsNotFound(err) {
				return nil // deleted while we listed
			}
			if err != nil {
				return err
			}
			mu.Lock()
			out[t] = d.Digest
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// VersionSummary is one row of a repository listing.
type VersionSummary struct {
	Tag     string    `json:"tag"`
	Digest  string    `json:"digest"`
	Created time.Time `json:"created,omitzero"`
	Size    int64     `json:"size"`
	Files   int       `json:"files"`
	// Stages lists the stage tags pointing at this version.
	Stages []string `json:"stages"`
}

// Listing is a model repository's content.
type Listing struct {
	Repository string           `json:"repository"`
	Versions   []VersionSummary `json:"versions"`
	// Stages maps each stage tag to the digest it points at.
	Stages map[string]string `json:"stages"`
	// Skipped lists version-like tags whose manifest is not a model.
	Skipped []string `json:"skipped,omitempty"`
}

// List reads the versions and stages of a repository, newest first.
func List(ctx context.Context, repo registry.Repository, ref registry.Reference) (*Listing, error) {
	tags, err := Tags(ctx, repo)
	if err != nil {
		return nil, remote.Explain(err, ref.Registry+"/"+ref.Repository)
	}
	var wanted []string
	for _, t := range tags {
		if k := tag.Classify(t); k == tag.Version || k == tag.Stage {
			wanted = append(wanted, t)
		}
	}
	digests, err := Resolve(ctx, repo, wanted)
	if err != nil {
		return nil, remote.Explain(err, ref.Registry+"/"+ref.Repository)
	}
	l := &Listing{Repository: ref.Registry + "/" + ref.Repository, Stages: map[string]string{}}
	stagesOf := map[digest.Digest][]string{}
	for t, d := range digests {
		if tag.Classify(t) == tag.Stage {
			l.Stages[t] = d.String()
			stagesOf[d] = append(stagesOf[d], t)
		}
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for t, d := range digests {
		if tag.Classify(t) != tag.Version {
			continue
		}
		g.Go(func() error {
			r := ref
			r.Reference = d.String()
			v, err := transfer.Fetch(gctx, repo, r)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if errorsIsNotModel(err) {
					l.Skipped = append(l.Skipped, t)
					return nil
				}
				return err
			}
			stages := slices.Sorted(slices.Values(stagesOf[d]))
			if stages == nil {
				stages = []string{}
			}
			l.Versions = append(l.Versions, VersionSummary{Tag: t, Digest: d.String(), Created: v.Metadata.Created, Size: v.Size(), Files: len(v.Files), Stages: stages})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.Sort(l.Skipped)
	slices.SortFunc(l.Versions, func(a, b VersionSummary) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.Tag, a.Tag)
	})
	if l.Versions == nil {
		l.Versions = []VersionSummary{}
	}
	return l, nil
}

// Inspection is one version with everything known about it.
type Inspection struct {
	Reference string         `json:"reference"`
	Version   *model.Version `json:"version"`
	// Tags lists every tag naming this digest; Versions and Stages split
	// them by kind.
	Tags     []string `json:"tags"`
	Versions []string `json:"versions"`
	Stages   []string `json:"stages"`
	// Evaluations are the metrics measured after training, oldest first.
	Evaluations []evaluation.Record `json:"evaluations"`
	// Image is the version's image view pinned by digest, when the
	// registry serves or holds one (docs/format.md, "Image view").
	Image string `json:"image,omitempty"`
	// Modelcar is the version's modelcar and ModelcarBase its base image,
	// when modelreg serve serves modelcars.
	Modelcar     string `json:"modelcar,omitempty"`
	ModelcarBase string `json:"modelcarBase,omitempty"`
	// Producer is what another producer's config says (a Docker model's
	// format, quantization, parameters...; a KitOps Kitfile's package
	// name, version, description, authors).
	Producer map[string]string `json:"producer,omitempty"`
	// Weights is what the headers of the version's safetensors and GGUF
	// files say (read with Range requests, never the weights).
	Weights *weights.Facts `json:"weights,omitempty"`
}

// Inspect reads one version and finds the tags that point at it.
func Inspect(ctx context.Context, repo registry.Repository, ref registry.Reference) (*Inspection, error) {
	v, err := transfer.Fetch(ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	tags, err := Tags(ctx, repo)
	if err != nil {
		return nil, remote.Explain(err, ref.String())
	}
	var wanted []string
	for _, t := range tags {
		if tag.Classify(t) != tag.Other {
			wanted = append(wanted, t)
		}
	}
	digests, err := Resolve(ctx, repo, wanted)
	if err != nil {
		return nil, remote.Explain(err, ref.String())
	}
	evals, err := evaluation.Of(ctx, repo, v.Descriptor)
	if err != nil {
		return nil, remote.Explain(err, ref.String())
	}
	in := &Inspection{Reference: ref.String(), Version: v, Tags: []string{}, Versions: []string{}, Stages: []string{}, Evaluations: evals}
	if (v.Format == "kitops" || v.Format == "docker-model") && v.Config.Size <= model.MaxProducerConfig {
		if b, err := content.FetchAll(ctx, repo, v.Config); err == nil { // digest and size verified
			in.Producer = model.ProducerFacts(v.Format, b)
		}
	}
	for _, t := range slices.Sorted(maps.Keys(digests)) {
		if digests[t] != v.Descriptor.Digest {
			continue
		}
		in.Tags = append(in.Tags, t)
		if tag.Classify(t) == tag.Stage {
			in.Stages = append(in.Stages, t)
		} else {
			in.Versions = append(in.Versions, t)
		}
	}
	return in, nil
}

func errorsIsNotModel(err error) bool { return errors.Is(err, model.ErrNotModel) }
