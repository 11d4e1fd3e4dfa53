package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/index"
)

// Lineage recorded at push, added later with modelreg, and attached by a
// training job with plain `oras attach` (examples/oras-attach-lineage.sh)
// lands in the server's index as edges: a version's inputs, and the
// descendants of a dataset or a base model.
func TestLineageIndexed(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	base := pushVersion(t, e, reg.Addr+"/team/base:1.0.0", "base weights")
	dir := filepath.Join(e.dir, "tuned")
	writeFile(t, filepath.Join(dir, "model.safetensors"), "fine-tuned", 0o644)
	dataset := "s3://data/train.parquet@sha256:" + strings.Repeat("a", 64)
	tuned := strings.TrimSpace(e.ok("push", reg.Addr+"/team/tuned:1.0.0", dir, "--dataset", dataset,
		"--base-model", reg.Addr+"/team/base:1.0.0", "--code", "https://github.com/acme/train@4f2a9c1").Stdout)
	e.ok("lineage", "add", reg.Addr+"/team/tuned:1.0.0", "--run", "https://ci.example.com/runs/812", "--param", "epochs=3")

	script, _ := filepath.Abs(filepath.Join("..", "..", "examples", "oras-attach-lineage.sh"))
	r := e.exec("", []string{"PATH=" + filepath.Dir(orasBin) + ":/usr/bin:/bin", "REF=" + reg.Addr + "/team/tuned:1.0.0",
		"ORAS_FLAGS=--plain-http", "DATASET_URI=s3://data/eval.parquet"}, "/bin/sh", script)
	if r.Code != 0 {
		t.Fatalf("oras attach example: %s\n%s", r.Stdout, r.Stderr)
	}

	// modelreg reads the record oras attached, like its own.
	if up := e.ok("lineage", reg.Addr+"/team/tuned:1.0.0", "--up").Stdout; !strings.Contains(up, "dataset s3://data/eval.parquet") || !strings.Contains(up, "run https://ci.example.com/runs/812") {
		t.Errorf("lineage --up does not show the oras-attached record:\n%s", up)
	}

	get := func(path string, v any) { t.Helper(); apiGet(t, reg.Addr, path, v) }
	var in struct{ Inputs []index.Edge }
	get("models/team/tuned/versions/1.0.0/lineage", &in)
	var got []string
	for _, e := range in.Inputs {
		got = append(got, e.Kind+" "+e.URI)
	}
	want := "code https://github.com/acme/train dataset s3://data/eval.parquet dataset s3://data/train.parquet model " + reg.Addr + "/team/base@" + base
	if strings.Join(got, " ") != want {
		t.Errorf("inputs:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, of := range []string{"s3://data/train.parquet", "sha256:" + strings.Repeat("a", 64), base, reg.Addr + "/team/base@" + base} {
		var d struct{ Descendants []index.Edge }
		get("lineage/descendants?of="+of, &d)
		if len(d.Descendants) != 1 || d.Descendants[0].Repo != "team/tuned" || d.Descendants[0].Digest != tuned {
			t.Errorf("descendants of %s: %+v", of, d.Descendants)
		}
	}
}
