package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/transfer"
)

// A tree with nested directories, an empty file, an executable, a symbolic
// link and a 1 GiB weight file goes through `modelreg serve` and comes back
// bit for bit, modes included.
func TestRoundTripLargeTree(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "model")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 1<<30, 1)
	writeRandom(t, filepath.Join(src, "shards", "deep", "part-0.bin"), 3<<20, 2)
	writeFile(t, filepath.Join(src, "config.json"), `{"hidden": 8}`, 0o644)
	writeFile(t, filepath.Join(src, "empty.txt"), "", 0o600)
	writeFile(t, filepath.Join(src, "scripts", "serve.py"), "print('hi')\n", 0o755)
	if err := os.Symlink("../config.json", filepath.Join(src, "scripts", "config-link.json")); err != nil {
		t.Fatal(err)
	}
	want := tree(t, src) // follows the link: its content is config.json's

	ref := reg.Addr + "/team/big:1.0.0"
	push := decode[transfer.PushResult](t, e.ok("push", ref, src, "--framework", "pytorch", "--metric", "accuracy=0.91", "--output", "json").Stdout)
	if !digestRE.MatchString(push.Digest) || push.Files != 6 {
		t.Fatalf("push result: %+v", push)
	}
	// config.json and its link share a blob: it is sent once.
	if wantSent := int64(1<<30 + 3<<20 + len(`{"hidden": 8}`) + len("print('hi')\n")); push.Uploaded < wantSent || push.Uploaded > wantSent+4096 {
		t.Errorf("uploaded %d bytes, want %d plus the config blob", push.Uploaded, wantSent)
	}

	out := filepath.Join(e.dir, "pulled")
	pull := decode[transfer.PullResult](t, e.ok("pull", ref, "-o", out, "--output", "json").Stdout)
	if pull.Digest != push.Digest {
		t.Errorf("pull digest %s, push digest %s", pull.Digest, push.Digest)
	}
	sameTree(t, want, tree(t, out))
	if info, err := os.Lstat(filepath.Join(out, "scripts", "config-link.json")); err != nil || !info.Mode().IsRegular() {
		t.Errorf("a followed symlink must come back as a regular file: %v %v", info, err)
	}

	// A new version of the same files (new --created, so a new digest)
	// uploads no file again: only the small config blob is new.
	next := decode[transfer.PushResult](t, e.ok("push", reg.Addr+"/team/big:1.0.1", src, "--created", "2020-01-01T00:00:00Z", "--output", "json").Stdout)
	if next.Digest == push.Digest {
		t.Errorf("a different --created must give a different digest")
	}
	if next.Uploaded > 4096 || next.Skipped < 1<<30 {
		t.Errorf("second version uploaded %d bytes, skipped %d", next.Uploaded, next.Skipped)
	}
}

// Same files and metadata with the same --created give the same digest, in
// another repository too, and a second version of the same content sends no
// file again.
func TestReproducibleDigest(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "w.gguf"), 2<<20, 3)
	writeFile(t, filepath.Join(src, "README.md"), "# card\n", 0o644)
	args := []string{src, "--created", "2026-03-03T14:00:00Z", "--metric", "f1=0.8", "--label", "team=fraud", "--output", "json"}
	a := decode[transfer.PushResult](t, e.ok(append([]string{"push", reg.Addr + "/team/a:1.0.0"}, args...)...).Stdout)
	b := decode[transfer.PushResult](t, e.ok(append([]string{"push", reg.Addr + "/team/b:1.0.0"}, args...)...).Stdout)
	c := decode[transfer.PushResult](t, e.ok(append([]string{"push", reg.Addr + "/team/a:1.0.1"}, args...)...).Stdout)
	if a.Digest != b.Digest || a.Digest != c.Digest {
		t.Errorf("digests differ: %s %s %s", a.Digest, b.Digest, c.Digest)
	}
	if c.Uploaded != 0 || c.Skipped != c.Size {
		t.Errorf("second version of the same content sent %d bytes (skipped %d of %d)", c.Uploaded, c.Skipped, c.Size)
	}
	// The same tag with the same content: success, nothing changed.
	same := decode[transfer.PushResult](t, e.ok(append([]string{"push", reg.Addr + "/team/a:1.0.0"}, args...)...).Stdout)
	if !same.Unchanged || same.Digest != a.Digest {
		t.Errorf("re-push of identical content: %+v", same)
	}
}

// Versions are immutable on any registry: other content under an existing
// version tag is refused and the tag keeps its digest.
func TestVersionIsImmutable(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "w.bin"), "one", 0o644)
	ref := reg.Addr + "/team/imm:2.0.0"
	first := strings.TrimSpace(e.ok("push", ref, src, "--metric", "acc=0.5").Stdout)
	// A CI re-run a second later: same files and metadata, no --created.
	time.Sleep(1100 * time.Millisecond)
	if again := strings.TrimSpace(e.ok("push", ref, src, "--metric", "acc=0.5").Stdout); again != first {
		t.Errorf("the identical re-push reports %s, want %s", again, first)
	}
	writeFile(t, filepath.Join(src, "w.bin"), "two", 0o644)
	e.fails([]string{"already exists with digest " + first, "immutable", "files changed: w.bin", `io.modelreg.metric.acc "0.5" (existing) vs "0.6"`}, "push", ref, src, "--metric", "acc=0.6")
	in := decode[catalog.Inspection](t, e.ok("inspect", ref, "--output", "json").Stdout)
	if in.Version.Descriptor.Digest.String() != first {
		t.Errorf("tag moved to %s", in.Version.Descriptor.Digest)
	}
}

// inspect shows metadata, files and every tag; list shows versions with the
// stages pointing at them, on a plain tags list.
func TestInspectAndList(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "model.onnx"), 1<<20, 4)
	writeFile(t, filepath.Join(src, "tokenizer.json"), "{}", 0o644)
	writeFile(t, filepath.Join(src, "train.py"), "#!/usr/bin/env python\n", 0o755)
	repo := reg.Addr + "/team/fraud"
	v1 := strings.TrimSpace(e.ok("push", repo+":1.0.0", src, "--created", "2026-01-01T00:00:00Z", "--framework", "onnx",
		"--metric", "accuracy=0.90", "--param", "lr=0.01", "--label", "owner=ml", "--dataset", "s3://d/train.parquet@sha256:"+strings.Repeat("ab", 32),
		"--description", "first cut").Stdout)
	writeFile(t, filepath.Join(src, "tokenizer.json"), `{"v":2}`, 0o644)
	r := e.ok("push", repo+":1.1.0", src, "--created", "2026-02-01T00:00:00Z", "--metric", "accuracy=0.95")
	v2 := strings.TrimSpace(r.Stdout)
	// Off a terminal: one line per file, then a summary; the digest alone on stdout.
	for _, w := range []string{"exists  model.onnx (1.0 MiB)", "pushed  tokenizer.json (7 B)", "exists  train.py"} {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("push progress lacks %q:\n%s", w, r.Stderr)
		}
	}
	if !digestRE.MatchString(v2) {
		t.Errorf("push stdout is not just the digest: %q", r.Stdout)
	}
	// Stages are plain tags; until promotion exists, any OCI client can set them.
	e.oras("tag", repo+"@"+v1, "production")
	e.oras("tag", repo+"@"+v2, "canary", "staging")

	in := decode[catalog.Inspection](t, e.ok("inspect", repo+":production", "--output", "json").Stdout)
	m := in.Version.Metadata
	if in.Version.Descriptor.Digest.String() != v1 || m.Framework != "onnx" || m.Metrics["accuracy"] != 0.90 ||
		m.Params["lr"] != "0.01" || m.Labels["owner"] != "ml" || m.Description != "first cut" || len(m.Datasets) != 1 {
		t.Errorf("inspect metadata: %+v", in)
	}
	if strings.Join(in.Versions, ",") != "1.0.0" || strings.Join(in.Stages, ",") != "production" {
		t.Errorf("inspect tags: versions %v stages %v", in.Versions, in.Stages)
	}
	var modes []string
	for _, f := range in.Version.Files {
		modes = append(modes, f.Path+":"+f.Kind+":"+f.Mode.String())
	}
	if got := strings.Join(modes, " "); got != "model.onnx:weight:-rw-r--r-- tokenizer.json:weight.config:-rw-r--r-- train.py:code:-rwxr-xr-x" {
		t.Errorf("files: %s", got)
	}
	text := e.ok("inspect", repo+":1.1.0").Stdout
	for _, w := range []string{v2, "canary, staging", "accuracy = 0.95", "train.py", "0755"} {
		if !strings.Contains(text, w) {
			t.Errorf("inspect text lacks %q:\n%s", w, text)
		}
	}

	l := decode[catalog.Listing](t, e.ok("list", repo, "--output", "json").Stdout)
	if len(l.Versions) != 2 || l.Versions[0].Tag != "1.1.0" || l.Versions[1].Tag != "1.0.0" {
		t.Fatalf("list order: %+v", l.Versions)
	}
	if strings.Join(l.Versions[0].Stages, ",") != "canary,staging" || strings.Join(l.Versions[1].Stages, ",") != "production" {
		t.Errorf("list stages: %+v", l.Versions)
	}
	if l.Stages["production"] != v1 || l.Stages["canary"] != v2 {
		t.Errorf("list stage map: %v", l.Stages)
	}
	text = e.ok("list", repo).Stdout
	if !strings.Contains(text, "1.0.0") || !strings.Contains(text, "production") || !strings.Contains(text, "canary,staging") {
		t.Errorf("list text:\n%s", text)
	}
}
