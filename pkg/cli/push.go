package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

// pushFlags are push's flags, turned into the library's options by options.
type pushFlags struct {
	metrics, params, labels, layerTypes []string
	framework, description, created     string
	concurrency                         int
	chunkMiB                            int64
	noCache                             bool
	dedupe                              string
	connections                         int
	image                               bool
	noIgnore                            bool
	lf                                  lineageFlags
}

// options checks every flag before any request is made.
func (f *pushFlags) options() (client.PushOptions, error) {
	var err error
	meta := model.Metadata{Framework: f.framework, Description: f.description, Datasets: f.lf.datasets}
	if meta.Metrics, err = model.ParseMetrics("--metric", f.metrics); err != nil {
		return client.PushOptions{}, usageError{err}
	}
	if meta.Params, err = model.ParseKeyValues("--param", f.params); err != nil {
		return client.PushOptions{}, usageError{err}
	}
	if meta.Labels, err = model.ParseKeyValues("--label", f.labels); err != nil {
		return client.PushOptions{}, usageError{err}
	}
	meta.Created = time.Now().UTC().Truncate(time.Second)
	if f.created != "" {
		if meta.Created, err = time.Parse(time.RFC3339, f.created); err != nil {
			return client.PushOptions{}, usageError{fmt.Errorf("--created %q: expected an RFC 3339 time, e.g. 2026-03-03T14:00:00Z", f.created)}
		}
	}
	if f.chunkMiB < 1 {
		return client.PushOptions{}, usageError{fmt.Errorf("--chunk-size %d: give at least 1 (MiB)", f.chunkMiB)}
	}
	if err := f.lf.validate(); err != nil {
		return client.PushOptions{}, err
	}
	rules, err := model.ParseRules(f.layerTypes)
	if err != nil {
		return client.PushOptions{}, usageError{fmt.Errorf("--layer-type: %w", err)}
	}
	if f.connections < 0 {
		return client.PushOptions{}, usageError{fmt.Errorf("--connections %d: expected 1 or more (0 or unset: decided by the link)", f.connections)}
	}
	switch client.Dedupe(f.dedupe) {
	case client.DedupeAuto, client.DedupeHash, client.DedupeStream:
	default:
		return client.PushOptions{}, usageError{fmt.Errorf("--dedupe %q: expected auto, hash or stream", f.dedupe)}
	}
	po := client.PushOptions{Metadata: meta, CreatedIsDefault: f.created == "", Dedupe: client.Dedupe(f.dedupe), Rules: rules, BaseModel: f.lf.baseModel, Concurrency: f.concurrency, ChunkSize: f.chunkMiB << 20, NoCache: f.noCache, Connections: f.connections, Image: f.image, NoIgnore: f.noIgnore}
	if !f.lf.empty() {
		if po.Lineage, err = f.lf.options(); err != nil {
			return client.PushOptions{}, err
		}
	}
	return po, nil
}

func (a *app) pushCmd() *cobra.Command {
	var pf pushFlags
	c := &cobra.Command{
		Use:   "push REF PATH...",
		Short: "Push model files as an immutable version",
		Long: `Push files and directories as one model version, tagged REF.

A directory contributes every file below it with its path relative to that
directory; a file contributes itself under its base name. Each file becomes
one uncompressed layer whose media type follows its kind (weight, config,
doc, code, dataset), chosen from the file name; --layer-type overrides it.
File modes are kept. Symbolic links to files are followed; a symbolic link
to a directory inside a tree is refused. Empty directories are not stored.
From each directory, .git/, .DS_Store, .cache/ and what the directory's
.modelregignore lists (gitignore syntax, read at its root) are left out and
listed; --no-ignore pushes everything. A file named on the command line is
always pushed.

Blobs the registry already has are not uploaded again: files the digest cache
knows are checked first, and (--dedupe auto) unknown files are hashed before
anything is sent unless the registry is on this machine or the last large
push to it ran faster than hashing could pay for, so a fresh CI runner
re-pushing weights the registry holds sends none of them. A file of 64 MiB
or more is sent in parts over several connections (--connections) when the
registry takes uploads in parts (modelreg serve does) and one connection is
the limit: the registry is not on this machine and no earlier push saw one
connection carry 350 MB/s. Interrupted uploads resume: a streamed file from
its last whole chunk, a file in parts from the last byte the registry holds.
The tag is written
last, so a failed push leaves no version behind. Versions are immutable:
pushing other content under an existing version fails, naming what differs
(files, metrics, params, ...); pushing the same files and metadata again
succeeds without change, also without --created (the existing version's
creation time is kept), so a retried CI job is safe. With the same files,
metadata and --created, the manifest digest is the same on every machine.

The version tag must start with a digit or with v and a digit (1.4.0, v12);
names like staging or production are stages, moved only by promotion.`,
		Example: `  modelreg push localhost:5000/team/fraud:1.4.0 ./model \
    --framework pytorch --metric accuracy=0.93 --param lr=3e-4 \
    --label owner=fraud-team --dataset s3://data/train.parquet@sha256:... \
    --base-model localhost:5000/team/base:2.0.0 --code https://github.com/acme/train@4f2a9c1 \
    --description "weekly retrain"`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			po, err := pf.options()
			if err != nil {
				return err
			}
			res, err := a.client(c, jsonOut).Push(c.Context(), args[0], args[1:], po)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(res)
			}
			if res.Unchanged {
				fmt.Fprintf(a.io.Err, "%s already holds this exact content; nothing to do\n", res.Reference)
			} else {
				fmt.Fprintf(a.io.Err, "pushed %s: %d files, %s (%s uploaded, %s already present, %s mounted)\n", res.Reference, res.Files,
					progress.Size(res.Size), progress.Size(res.Uploaded), progress.Size(res.Skipped), progress.Size(res.Mounted))
			}
			if len(res.Ignored) > 0 {
				fmt.Fprintf(a.io.Err, "left out (.modelregignore and defaults; --no-ignore pushes them): %s\n", strings.Join(res.Ignored, ", "))
			}
			if res.Image != "" {
				fmt.Fprintf(a.io.Err, "image view %s (%s of tar layers uploaded)\n", res.Image, progress.Size(res.ImageSent))
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(a.io.Err, "warning:", w)
			}
			fmt.Fprintln(a.io.Out, res.Digest)
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&pf.metrics, "metric", nil, "numeric metric KEY=NUMBER (repeatable)")
	f.StringArrayVar(&pf.params, "param", nil, "hyperparameter KEY=VALUE (repeatable)")
	f.StringArrayVar(&pf.labels, "label", nil, "label KEY=VALUE (repeatable)")
	pf.lf.add(c, true)
	f.StringVar(&pf.framework, "framework", "", "training framework, e.g. pytorch, sklearn, xgboost")
	f.StringVar(&pf.description, "description", "", "human-readable description of this version")
	f.StringVar(&pf.created, "created", "", "creation time, RFC 3339 (default: now); fix it to make the digest reproducible")
	f.StringArrayVar(&pf.layerTypes, "layer-type", nil, "override a file's kind: PATTERN=KIND, KIND one of weight, config, doc, code, dataset (repeatable)")
	f.IntVar(&pf.concurrency, "concurrency", 0, "files hashed and uploaded at once (default: 2 per CPU, at least 4)")
	f.Int64Var(&pf.chunkMiB, "chunk-size", 256, "MiB per upload request; an interrupted upload resumes from the last whole chunk")
	f.StringVar(&pf.dedupe, "dedupe", "auto", "files the digest cache does not know: hash (hash first, never send what the registry has), stream (one read) or auto (hash unless the link is as fast as the disk: the last large push to this registry ran over 350 MB/s, or, with none remembered, it is on loopback)")
	f.IntVar(&pf.connections, "connections", 0, "connections one file of 64 MiB or more is sent over, in parts, to a registry taking uploads in parts (default: 8, or 1 when the registry is on loopback or one connection was seen to carry 350 MB/s; 1: never parts)")
	f.BoolVar(&pf.image, "image", false, "also write the version's image view (its files as tar layers under /models) so containerd, Kubernetes image volumes and KServe can pull it; costs the model's size again on the registry (see `modelreg image`)")
	f.BoolVar(&pf.noIgnore, "no-ignore", false, "push every file of the directories given; by default .git/, .DS_Store, .cache/ and what each directory's .modelregignore lists (gitignore syntax) are left out")
	f.BoolVar(&pf.noCache, "no-cache", false, "hash every file instead of trusting the digest cache (size, mtime and inode unchanged)")
	a.addOutputFlag(c)
	return c
}
