package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/transfer"
)

// What modelreg pushes, the real oras CLI pulls back byte for byte.
func TestOrasPullsModelregPush(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 5<<20, 5)
	writeFile(t, filepath.Join(src, "config.json"), `{"a":1}`, 0o644)
	writeFile(t, filepath.Join(src, "docs", "README.md"), "# card\n", 0o644)
	ref := reg.Addr + "/team/interop:1.0.0"
	e.ok("push", ref, src)

	out := filepath.Join(e.dir, "oras-out")
	e.oras("pull", ref, "-o", out)
	want := tree(t, src)
	got := tree(t, out)
	for p, w := range want { // oras does not restore modes: compare content only
		if g, ok := got[p]; !ok || g[5:] != w[5:] {
			t.Errorf("%s: oras pulled %q, want %q", p, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("oras pulled %d files, want %d", len(got), len(want))
	}
}

// A training job without modelreg pushes with plain `oras push` (the command
// documented in docs/format.md and examples/oras-push.sh); modelreg reads the
// metadata and pulls the files.
func TestModelregReadsOrasPush(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	writeRandom(t, filepath.Join(e.dir, "model.safetensors"), 4<<20, 6)
	writeFile(t, filepath.Join(e.dir, "config.json"), `{"layers":2}`, 0o644)
	writeFile(t, filepath.Join(e.dir, "README.md"), "# fraud detector\n", 0o644)
	ref := reg.Addr + "/team/oras-made:3.0.0"
	e.oras("push", ref,
		"--artifact-type", "application/vnd.cncf.model.manifest.v1+json",
		"--annotation", "org.opencontainers.image.created=2026-03-03T14:00:00Z",
		"--annotation", "org.opencontainers.image.description=weekly retrain",
		"--annotation", "io.modelreg.framework=pytorch",
		"--annotation", "io.modelreg.metric.accuracy=0.93",
		"--annotation", "io.modelreg.param.lr=3e-4",
		"--annotation", "io.modelreg.label.owner=fraud-team",
		"--annotation", "io.modelreg.dataset.0=s3://data/train.parquet",
		"model.safetensors:application/vnd.cncf.model.weight.v1.raw",
		"config.json:application/vnd.cncf.model.weight.config.v1.raw",
		"README.md:application/vnd.cncf.model.doc.v1.raw",
	)
	in := decode[catalog.Inspection](t, e.ok("inspect", ref, "--output", "json").Stdout)
	m := in.Version.Metadata
	if m.Framework != "pytorch" || m.Metrics["accuracy"] != 0.93 || m.Params["lr"] != "3e-4" || m.Labels["owner"] != "fraud-team" ||
		m.Description != "weekly retrain" || m.Created.IsZero() || len(m.Datasets) != 1 || m.Datasets[0] != "s3://data/train.parquet" {
		t.Errorf("metadata read from an oras push: %+v", m)
	}
	var kinds []string
	for _, f := range in.Version.Files {
		kinds = append(kinds, f.Path+"="+f.Kind)
	}
	if got := strings.Join(kinds, " "); got != "model.safetensors=weight config.json=weight.config README.md=doc" {
		t.Errorf("files: %s", got)
	}
	out := filepath.Join(e.dir, "pulled")
	pull := decode[transfer.PullResult](t, e.ok("pull", ref, "-o", out, "--output", "json").Stdout)
	if pull.Files != 3 {
		t.Errorf("pulled %d files", pull.Files)
	}
	for _, name := range []string{"model.safetensors", "config.json", "README.md"} {
		a, _ := os.ReadFile(filepath.Join(e.dir, name))
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || string(a) != string(b) {
			t.Errorf("%s differs after pull (%v)", name, err)
		}
	}
	l := decode[catalog.Listing](t, e.ok("list", reg.Addr+"/team/oras-made", "--output", "json").Stdout)
	if len(l.Versions) != 1 || l.Versions[0].Tag != "3.0.0" {
		t.Errorf("list: %+v", l)
	}
}

// A directory pushed with `oras push dir/` (a gzipped tar) is unpacked by
// modelreg pull.
func TestModelregPullsOrasDirectory(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	writeFile(t, filepath.Join(e.dir, "weights", "a.bin"), "AAAA", 0o644)
	writeFile(t, filepath.Join(e.dir, "weights", "nested", "b.bin"), "BBBB", 0o644)
	ref := reg.Addr + "/team/oras-dir:1.0.0"
	e.oras("push", ref, "--artifact-type", "application/vnd.cncf.model.manifest.v1+json", "weights/")
	out := filepath.Join(e.dir, "pulled")
	e.ok("pull", ref, "-o", out)
	got := tree(t, out)
	want := tree(t, filepath.Join(e.dir))
	for _, p := range []string{"weights/a.bin", "weights/nested/b.bin"} {
		if got[p] == "" || got[p][5:] != want[p][5:] {
			t.Errorf("%s: got %q want %q", p, got[p], want[p])
		}
	}
}
