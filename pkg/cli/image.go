package cli

import (
	"fmt"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func (a *app) imageCmd() *cobra.Command {
	var write, check, modelcar bool
	c := &cobra.Command{
		Use:   "image REF",
		Short: "Print (or write) the image view of a version: the reference a Pod or ctr pulls",
		Long: `Every model version has an image view: an OCI image whose layers are tars
holding the version's files under /models (modes kept, owned by root, mtime
0), so container runtimes can pull and mount a model like any image:
containerd (ctr image pull, ctr image mount), Kubernetes image volumes,
KServe, umoci, crane export. Its digest is a pure function of the version:
the same version has the same image view digest on every registry.

image prints the view pinned by digest (REGISTRY/REPO@sha256:...), found
among the version's referrers. --write writes it when the registry has
none: the version's files are read from the registry twice (for the tar
digests, then to upload) and stored again as tar layers, so the view costs
the model's size again. push --image writes it at push time from the local
files instead. --check recomputes the view from the version's blobs and
fails unless the registry's view is exactly that one: after verifying the
version's signatures, a deploy step can pin the printed digest without
trusting the registry. The tar encoding is frozen (docs/format.md, "Image
view").`,
		Example: `  modelreg image localhost:5000/team/fraud:1.4.0
  modelreg image --write registry.example.com/team/fraud:production
  ctr image pull --plain-http "$(modelreg image localhost:5000/team/fraud:1.4.0)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			cl := a.client(c, jsonOut)
			var iv *client.ImageView
			switch {
			case modelcar && (write || check):
				return usageError{fmt.Errorf("--modelcar takes neither --write nor --check")}
			case modelcar:
				iv, err = cl.Modelcar(c.Context(), args[0])
			case write && check:
				return usageError{fmt.Errorf("--write and --check: write first, then check")}
			case write:
				iv, err = cl.WriteImage(c.Context(), args[0])
			case check:
				iv, err = cl.CheckImage(c.Context(), args[0])
			default:
				iv, err = cl.Image(c.Context(), args[0])
			}
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(iv)
			}
			if check {
				fmt.Fprintf(a.io.Err, "image view checked: the version's files make %s\n", iv.Digest)
			}
			if write {
				fmt.Fprintf(a.io.Err, "image view of %s written: %s of tar layers uploaded, %s already present\n", iv.Version, progress.Size(iv.Sent), progress.Size(iv.Reused))
			}
			fmt.Fprintln(a.io.Out, iv.Reference)
			return nil
		},
	}
	c.Flags().BoolVar(&modelcar, "modelcar", false, "print the version's modelcar instead: modelreg serve's base image (started with --modelcar-base) under the files at /models, for KServe oci://")
	c.Flags().BoolVar(&check, "check", false, "recompute the view from the version's own blobs (one full read, every blob verified) and fail unless the registry's view is that one: trust the view's digest without trusting the registry")
	c.Flags().BoolVar(&write, "write", false, "write the image view when the registry has none (reads the files from the registry and uploads them again as tars)")
	a.addOutputFlag(c)
	return c
}
