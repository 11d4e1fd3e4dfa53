package e2e

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The 20-line program in examples/library pushes, promotes and pulls a
// model through pkg/client against a real modelreg serve.
func TestLibraryExample(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "model")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), 1<<20, 5)
	writeFile(t, filepath.Join(src, "config.json"), `{"layers": 2}`, 0o644)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "library")
	build := exec.Command("go", "build", "-o", bin, "./examples/library")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/library: %v\n%s", err, out)
	}
	out := filepath.Join(e.dir, "pulled")
	r := e.exec("", nil, bin, reg.Addr+"/team/library", src, out)
	if r.Code != 0 {
		t.Fatalf("examples/library: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	fields := strings.Fields(r.Stdout)
	if len(fields) != 3 || !strings.HasPrefix(fields[0], "sha256:") || !strings.HasPrefix(fields[1], "sha256:") || fields[2] != "2" {
		t.Fatalf("examples/library printed %q, want DIGEST RECORD 2", r.Stdout)
	}
	if got := resolve(t, e, reg.Addr+"/team/library:staging"); got != fields[0] {
		t.Errorf("staging holds %s, the example pushed %s", got, fields[0])
	}
	if got := tree(t, out)["model.safetensors"]; !strings.HasSuffix(got, sum) {
		t.Errorf("pulled weights %s, want %s", got, sum)
	}
	e.ok("history", reg.Addr+"/team/library", "--stage", "staging", "--verify")
}
