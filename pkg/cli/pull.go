package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/spf13/cobra"
)

func (a *app) pullCmd() *cobra.Command {
	var (
		dir         string
		concurrency int
		ratio       int64
		expand      = sizeFlag(transfer.DefaultMaxExpandBytes)
		entries     int64
		connections int
		include     []string
		exclude     []string
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
A path that two layers (or one tar layer twice) would write is refused too,
naming both layers. Only permission bits are restored, never setuid, setgid
or sticky bits.

Tar layers (from oras, KitOps, other ModelPack tools) are unpacked under
bounds that stop a decompression bomb: a layer may unpack to at most
--max-expand-ratio times its size (at least 1 MiB) and at most
--max-expand-bytes more than its size, and hold at most --max-entries
entries. The defaults pass every ordinary dataset measured (the most
compressible, a sparse one-hot CSV, unpacks to 565 times its size); a layer
beyond them is refused with the flag that raises its bound. 0 removes a bound.

--include and --exclude (repeatable) pull a subset: the files matching an
--include pattern (all when none is given) and no --exclude pattern. A
pattern without a slash matches base names at any depth (*.json); one with
a slash matches whole paths, ** spanning directories; one ending in a slash
everything under that directory (shards/). Every fetched byte is
verified as in a full pull; the files left out are listed.

REF may name a version, a stage (production) or a digest (@sha256:...).`,
		Example: `  modelreg pull localhost:5000/team/fraud:production -o ./fraud-model
  modelreg pull localhost:5000/team/llm:2.0.0 -o ./cfg --include '*.json' --include 'model-00001-*.safetensors'
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
			for _, b := range []struct {
				flag string
				v    int64
			}{{"--max-expand-ratio", ratio}, {"--max-expand-bytes", int64(expand)}, {"--max-entries", entries}} {
				if b.v < 0 {
					return usageError{fmt.Errorf("%s %d: give a positive bound, or 0 for none", b.flag, b.v)}
				}
			}
			if connections < 0 {
				return usageError{fmt.Errorf("--connections %d: give a positive number of connections per large file (1: one stream)", connections)}
			}
			res, err := a.client(c, jsonOut).Pull(c.Context(), args[0], dir, transfer.PullOptions{
				Concurrency:      concurrency,
				RangeConnections: connections,
				Include:          include, Exclude: exclude,
				MaxExpandRatio: noneIfZero(ratio), MaxExpandBytes: noneIfZero(int64(expand)), MaxEntries: noneIfZero(entries),
			})
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(res)
			}
			fmt.Fprintf(a.io.Err, "pulled %s: %d files, %s into %s\n", res.Reference, res.Files, progress.Size(res.Size), res.Dir)
			if len(res.Skipped) > 0 {
				fmt.Fprintf(a.io.Err, "left out (--include/--exclude): %s\n", strings.Join(res.Skipped, ", "))
			}
			fmt.Fprintln(a.io.Out, res.Digest)
			return nil
		},
	}
	c.Flags().StringVarP(&dir, "output-dir", "o", "", "directory to create with the model's files (required)")
	c.Flags().StringArrayVar(&include, "include", nil, "pull only files matching this glob (repeatable; no slash: base names at any depth; ** spans directories)")
	c.Flags().StringArrayVar(&exclude, "exclude", nil, "leave out files matching this glob (repeatable)")
	c.Flags().IntVar(&concurrency, "concurrency", 0, "files downloaded at once (default: one per CPU, at least 4)")
	c.Flags().IntVar(&connections, "connections", 0, fmt.Sprintf("HTTP range requests, each on its own connection, that fetch one file of %d MiB or more (default %d; 1: one stream per file)", transfer.DefaultRangeThreshold>>20, transfer.DefaultRangeConnections))
	c.Flags().Int64Var(&ratio, "max-expand-ratio", transfer.DefaultMaxExpandRatio, "most times its own size a tar layer may unpack to (at least 1 MiB); 0 for no bound")
	c.Flags().Var(&expand, "max-expand-bytes", "most bytes a tar layer may unpack to beyond its own size (1073741824, 512MiB, 64GiB); 0 for no bound")
	c.Flags().Int64Var(&entries, "max-entries", transfer.DefaultMaxEntries, "most files and directories one tar layer may hold; 0 for no bound")
	a.addOutputFlag(c)
	return c
}

// noneIfZero maps a flag's "0 for no bound" to transfer.PullOptions'
// "negative for no bound" (0 there picks the default).
func noneIfZero(v int64) int64 {
	if v == 0 {
		return -1
	}
	return v
}

// sizeFlag is a byte count given as a plain number or with a binary unit
// (KiB, MiB, GiB, TiB), so a bound of 64 GiB need not be typed in bytes.
type sizeFlag int64

func (s *sizeFlag) String() string {
	n := int64(*s)
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s *sizeFlag) Set(v string) error {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range []struct {
		name string
		size int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.name); ok {
			num, mult = strings.TrimSpace(rest), u.size
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q is not a size: give bytes, or a number with KiB, MiB, GiB or TiB (64GiB)", v)
	}
	*s = sizeFlag(n * mult)
	return nil
}

func (s *sizeFlag) Type() string { return "size" }
