package e2e

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/modelreg/modelreg/pkg/transfer"
)

// A push leaves out .git/, caches and what .modelregignore lists, and says
// so; a pull takes the subset --include and --exclude select, each file
// verified, and lists the rest; patterns that select nothing or do not
// parse are refused before anything is written.
func TestPushIgnoresAndPartialPull(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "config.json"), `{"a": 1}`, 0o644)
	writeFile(t, filepath.Join(src, "tokenizer.json"), `{"t": 1}`, 0o644)
	for _, s := range []string{"00001", "00002", "00003"} {
		writeRandom(t, filepath.Join(src, "shards", "model-"+s+"-of-00003.safetensors"), 1<<20, 7)
	}
	writeFile(t, filepath.Join(src, ".git", "HEAD"), "ref: refs/heads/main\n", 0o644)
	writeFile(t, filepath.Join(src, "runs", "events.log"), "loss 0.1\n", 0o644)
	writeFile(t, filepath.Join(src, ".modelregignore"), "runs/\n", 0o644)
	full := tree(t, src)

	ref := reg.Addr + "/team/subset:1.0.0"
	res := decode[transfer.PushResult](t, e.ok("push", ref, src, "--output", "json").Stdout)
	slices.Sort(res.Ignored)
	if want := []string{".git/", ".modelregignore", "runs/"}; !slices.Equal(res.Ignored, want) || res.Files != 5 {
		t.Errorf("push: %d files, left out %q; want 5 files, %q left out", res.Files, res.Ignored, want)
	}
	pushed := maps.Clone(full)
	for _, p := range []string{".git/HEAD", ".modelregignore", "runs/events.log"} {
		delete(pushed, p)
	}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"json", []string{"--include", "*.json"}, []string{"config.json", "tokenizer.json"}},
		{"two-shards", []string{"--include", "shards/**", "--exclude", "*-00002-*"}, []string{"shards/model-00001-of-00003.safetensors", "shards/model-00003-of-00003.safetensors"}},
		{"no-shards", []string{"--exclude", "shards/"}, []string{"config.json", "tokenizer.json"}},
	} {
		out := filepath.Join(e.dir, "out-"+c.name)
		pr := decode[transfer.PullResult](t, e.ok(append([]string{"pull", ref, "-o", out, "--output", "json"}, c.args...)...).Stdout)
		got := tree(t, out)
		want := map[string]string{}
		for _, p := range c.want {
			want[p] = pushed[p]
		}
		sameTree(t, want, got)
		if pr.Files != len(c.want) || len(pr.Skipped) != 5-len(c.want) {
			t.Errorf("%s: %d files pulled, %d skipped", c.name, pr.Files, len(pr.Skipped))
		}
	}
	bad := filepath.Join(e.dir, "bad")
	e.fails([]string{"no file of the version matches", "config.json"}, "pull", ref, "-o", bad, "--include", "*.gguf")
	e.fails([]string{"not a valid glob"}, "pull", ref, "-o", bad, "--include", "[")
	e.fails([]string{"names a repository, not a version", "modelreg list"}, "pull", reg.Addr+"/team/subset", "-o", bad)
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a refused pull left %s behind", bad)
	}
	// --no-ignore pushes everything.
	all := decode[transfer.PushResult](t, e.ok("push", reg.Addr+"/team/subset:2.0.0", src, "--no-ignore", "--output", "json").Stdout)
	if all.Files != len(full) || len(all.Ignored) != 0 {
		t.Errorf("--no-ignore pushed %d of %d files, left out %q", all.Files, len(full), all.Ignored)
	}
}
