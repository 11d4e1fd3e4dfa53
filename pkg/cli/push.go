package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) pushCmd() *cobra.Command {
	var (
		metrics, params, labels, layerTypes []string
		framework, description, created     string
		concurrency                         int
		chunkMiB                            int64
		noCache                             bool
		lf                                  lineageFlags
	)
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

Blobs the registry already has are not uploaded again. The tag is written
last, so a failed push leaves no version behind. Versions are immutable:
pushing other content under an existing version fails, pushing the same
content again succeeds without change. With the same files, metadata and
--created, the manifest digest is the same on every machine.

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
			meta := model.Metadata{Framework: framework, Description: description, Datasets: lf.datasets}
			if meta.Metrics, err = model.ParseMetrics(metrics); err != nil {
				return usageError{err}
			}
			if meta.Params, err = model.ParseKeyValues("--param", params); err != nil {
				return usageError{err}
			}
			if meta.Labels, err = model.ParseKeyValues("--label", labels); err != nil {
				return usageError{err}
			}
			meta.Created = time.Now().UTC().Truncate(time.Second)
			if created != "" {
				if meta.Created, err = time.Parse(time.RFC3339, created); err != nil {
					return usageError{fmt.Errorf("--created %q: expected an RFC 3339 time, e.g. 2026-03-03T14:00:00Z", created)}
				}
			}
			if chunkMiB < 1 {
				return usageError{fmt.Errorf("--chunk-size %d: give at least 1 (MiB)", chunkMiB)}
			}
			if err := lf.validate(); err != nil {
				return err
			}
			rules, err := model.ParseRules(layerTypes)
			if err != nil {
				return usageError{err}
			}
			po := client.PushOptions{Metadata: meta, Rules: rules, BaseModel: lf.baseModel, Concurrency: concurrency, ChunkSize: chunkMiB << 20, NoCache: noCache}
			if !lf.empty() {
				if po.Lineage, err = lf.options(); err != nil {
					return err
				}
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
			fmt.Fprintln(a.io.Out, res.Digest)
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&metrics, "metric", nil, "numeric metric KEY=NUMBER (repeatable)")
	f.StringArrayVar(&params, "param", nil, "hyperparameter KEY=VALUE (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	lf.add(c, true)
	f.StringVar(&framework, "framework", "", "training framework, e.g. pytorch, sklearn, xgboost")
	f.StringVar(&description, "description", "", "human-readable description of this version")
	f.StringVar(&created, "created", "", "creation time, RFC 3339 (default: now); fix it to make the digest reproducible")
	f.StringArrayVar(&layerTypes, "layer-type", nil, "override a file's kind: PATTERN=KIND, KIND one of weight, config, doc, code, dataset (repeatable)")
	f.IntVar(&concurrency, "concurrency", 0, "files hashed and uploaded at once (default: 2 per CPU, at least 4)")
	f.Int64Var(&chunkMiB, "chunk-size", 256, "MiB per upload request; an interrupted upload resumes from the last whole chunk")
	f.BoolVar(&noCache, "no-cache", false, "hash every file instead of trusting the digest cache (size, mtime and inode unchanged)")
	a.addOutputFlag(c)
	return c
}

// cacheDir is modelreg's per-user cache ($XDG_CACHE_HOME/modelreg, or
// ~/.cache/modelreg): digests of pushed files, resumable upload state.
func cacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "modelreg")
}
