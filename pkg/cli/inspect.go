package cli

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/spf13/cobra"
)

func producerName(format string) string {
	if format == "kitops" {
		return "Kitfile"
	}
	return "Docker model"
}

// humanCount writes a parameter count as people say it: 8.03B, 124M.
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 2, 64) + "B"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + "M"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 1, 64) + "K"
	}
	return strconv.FormatInt(n, 10)
}

func (a *app) inspectCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show a version's digest, files, metadata and tags",
		Long: `Show one model version: its digest and size, its files with kind, mode
and digest, its metadata (created, framework, metrics, params, labels,
datasets, other annotations), and every tag pointing at it, versions and
stages alike. REF may name a version, a stage or a digest.`,
		Example: `  modelreg inspect localhost:5000/team/fraud:1.4.0
  modelreg inspect localhost:5000/team/fraud:production --output json | jq .version.metadata.metrics`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			jsonOut, err := a.outputJSON()
			if err != nil {
				return err
			}
			in, err := a.client(c, true).Inspect(c.Context(), args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return a.json(in)
			}
			v := in.Version
			w := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "Reference:\t%s\n", in.Reference)
			fmt.Fprintf(w, "Digest:\t%s\n", v.Descriptor.Digest)
			fmt.Fprintf(w, "Format:\t%s (%s)\n", v.Format, v.ArtifactType)
			fmt.Fprintf(w, "Size:\t%s in %d files\n", progress.Size(v.Size()), len(v.Files))
			fmt.Fprintf(w, "Versions:\t%s\n", orNone(in.Versions))
			fmt.Fprintf(w, "Stages:\t%s\n", orNone(in.Stages))
			if in.Image != "" {
				fmt.Fprintf(w, "Image view:\t%s\n", in.Image)
			}
			if in.Modelcar != "" {
				fmt.Fprintf(w, "Modelcar:\t%s (base %s)\n", in.Modelcar, in.ModelcarBase)
			}
			for _, k := range slices.Sorted(maps.Keys(in.Producer)) {
				fmt.Fprintf(w, "%s %s:\t%s\n", producerName(in.Version.Format), k, in.Producer[k])
			}
			if f := in.Weights; f != nil {
				line := fmt.Sprintf("%s parameters in %d tensors (%s; %s)", humanCount(f.Parameters), f.Tensors, f.Format, strings.Join(f.DTypes, ", "))
				for _, s := range []string{f.Architecture, f.Quantization} {
					if s != "" {
						line += ", " + s
					}
				}
				if f.ContextLength > 0 {
					line += fmt.Sprintf(", context %d", f.ContextLength)
				}
				fmt.Fprintf(w, "Weights:\t%s\n", line)
			}
			m := v.Metadata
			if !m.Created.IsZero() {
				fmt.Fprintf(w, "Created:\t%s\n", m.Created.Format(time.RFC3339))
			}
			if m.Framework != "" {
				fmt.Fprintf(w, "Framework:\t%s\n", m.Framework)
			}
			if m.Description != "" {
				fmt.Fprintf(w, "Description:\t%s\n", m.Description)
			}
			printMap(w, "Metrics", m.Metrics, func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) })
			for _, e := range in.Evaluations {
				var parts []string
				for _, k := range slices.Sorted(maps.Keys(e.Metrics)) {
					parts = append(parts, k+" = "+strconv.FormatFloat(e.Metrics[k], 'g', -1, 64))
				}
				line := strings.Join(parts, ", ") + " (" + e.Time.Format(time.RFC3339) + ", " + e.Actor
				if e.Dataset != "" {
					line += ", on " + e.Dataset
				}
				line += ")"
				if e.Problem != "" {
					line += " REJECTED: " + e.Problem
				}
				fmt.Fprintf(w, "Evaluation:\t%s\n", line)
			}
			printMap(w, "Params", m.Params, func(s string) string { return s })
			printMap(w, "Labels", m.Labels, func(s string) string { return s })
			for i, d := range m.Datasets {
				fmt.Fprintf(w, "Dataset %d:\t%s\n", i, d)
			}
			printMap(w, "Annotations", m.Extra, func(s string) string { return s })
			w.Flush()
			fmt.Fprintln(a.io.Out)
			w = tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "FILE\tKIND\tMODE\tSIZE\tDIGEST")
			for _, f := range v.Files {
				kind := f.Kind
				if kind == "" {
					kind = "-"
				}
				if f.Encoding != "raw" {
					kind += " (" + f.Encoding + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%04o\t%s\t%s\n", f.Path, kind, f.Mode, progress.Size(f.Descriptor.Size), shortDigest(f.Descriptor.Digest.String()))
			}
			return w.Flush()
		},
	}
	a.addOutputFlag(c)
	return c
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

func printMap[V any](w *tabwriter.Writer, title string, m map[string]V, format func(V) string) {
	for i, k := range slices.Sorted(maps.Keys(m)) {
		label := ""
		if i == 0 {
			label = title + ":"
		}
		fmt.Fprintf(w, "%s\t%s = %s\n", label, k, format(m[k]))
	}
}
