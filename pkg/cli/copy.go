package cli

import (
	"fmt"
	"strings"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) copyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "copy SRC DST",
		Short: "Copy a version to another repository or registry, with its signatures and records",
		Long: `Copy the version SRC (REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST) to DST
(REGISTRY/REPO, or REGISTRY/REPO:TAG to tag it otherwise), between any two
registries (modelreg serve or not, both ways): the manifest, its blobs,
and every referrer, recursively (signatures in all three cosign forms,
attestations, lineage, evaluations, promotion records, an image view), with
every digest kept, so signatures verify at the destination (cosign verify,
modelreg verify). Blobs the destination already has are not sent again:
a second run copies only what is new.

Stages are not copied: a stage moves only by promotion, so promote at the
destination, where its own trust policy decides. The source's promotion
records arrive as its history; modelreg serve keeps them as records it did
not sign, outside its own stage history.`,
		Example: `  modelreg copy dev.example.com/team/fraud:1.4.0 prod.example.com/team/fraud
  modelreg copy localhost:5000/team/fraud@sha256:4f2a... registry.example.com/ml/fraud:1.4.0 --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			res, err := a.client(c, jsonOut).Copy(c.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(res)
			}
			fmt.Fprintf(a.io.Err, "copied %s to %s: %d manifests and blobs sent (%s), %d already there", res.Source, res.Destination, res.Copied, progress.Size(res.Bytes), res.Skipped)
			if len(res.LegacyTags) > 0 {
				fmt.Fprintf(a.io.Err, "; cosign tags %s", strings.Join(res.LegacyTags, ", "))
			}
			fmt.Fprintln(a.io.Err)
			fmt.Fprintln(a.io.Out, res.Digest)
			return nil
		},
	}
	a.addOutputFlag(c)
	return c
}
