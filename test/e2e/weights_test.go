package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/fixture"
	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/index"
)

// The headers of weights files become searchable facts on modelreg serve,
// for versions pushed by modelreg and by plain oras alike, again after a
// rebuild of the index; inspect reads them on any registry with Range
// requests; a file named .safetensors that is not one adds nothing.
func TestWeightsFacts(t *testing.T) {
	data := t.TempDir()
	p := startServeAt(t, data, "127.0.0.1:0")
	plain := startPlainRegistry(t)
	e := newEnv(t)
	st := filepath.Join(e.dir, "st")
	writeFile(t, filepath.Join(st, "model.safetensors"), string(fixture.Safetensors([]fixture.Tensor{
		{Name: "embed", DType: "BF16", Shape: []int64{100, 64}}, {Name: "head", DType: "BF16", Shape: []int64{64, 100}}, {Name: "norm", DType: "F32", Shape: []int64{64}},
	}, 1)), 0o644)
	writeFile(t, filepath.Join(st, "config.json"), `{}`, 0o644)
	gg := filepath.Join(e.dir, "gg")
	writeFile(t, filepath.Join(gg, "tiny.Q4_K_M.gguf"), string(fixture.GGUF(map[string]any{"general.architecture": "llama", "general.file_type": uint32(15), "llama.context_length": uint32(4096)},
		2000, []fixture.Tensor{{Name: "tok", DType: "12", Shape: []int64{64, 2000}}, {Name: "out", DType: "14", Shape: []int64{64, 2000}}}, 2)), 0o644)
	junk := filepath.Join(e.dir, "junk")
	writeRandom(t, filepath.Join(junk, "model.safetensors"), 1<<20, 3)

	addr := p.reg.Addr
	e.ok("push", addr+"/team/st:1.0.0", st)
	e.ok("push", addr+"/team/junk:1.0.0", junk)
	// A training job pushing a GGUF with plain oras.
	if r := e.exec("", nil, "sh", "-c", fmt.Sprintf("cd %s && %s push --plain-http --artifact-type application/vnd.cncf.model.manifest.v1+json %s/team/gg:1.0.0 tiny.Q4_K_M.gguf", gg, orasBin, addr)); r.Code != 0 {
		t.Fatalf("oras push: %s", r.Stderr)
	}

	search := func(q string) []string {
		t.Helper()
		var got []string
		for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(100 * time.Millisecond) { // read in the background after the push
			out := decode[struct{ Versions []index.VersionRow }](t, e.ok("search", q, "--registry", addr, "--output", "json").Stdout)
			got = nil
			for _, v := range out.Versions {
				got = append(got, v.Repository)
			}
			slices.Sort(got)
			if len(got) > 0 {
				break
			}
		}
		return got
	}
	check := func(when string) {
		t.Helper()
		for q, want := range map[string]string{
			"weights.parameters = 12864 and weights.dtype = 'BF16'":              "[team/st]",
			"weights.architecture = 'llama' and weights.quantization = 'Q4_K_M'": "[team/gg]",
			"weights.context_length >= 4096 and weights.parameters > 2e5":        "[team/gg]",
			"weights.format in ('gguf', 'safetensors') and weights.tensors >= 2": "[team/gg team/st]",
		} {
			if got := fmt.Sprint(search(q)); got != want {
				t.Errorf("%s, %s: %s, want %s", when, q, got, want)
			}
		}
	}
	check("after the pushes")

	// On plain distribution, inspect reads the headers itself.
	e.ok("push", plain.Addr+"/team/st:1.0.0", st)
	in := decode[catalog.Inspection](t, e.ok("inspect", plain.Addr+"/team/st:1.0.0", "--output", "json").Stdout)
	if w := in.Weights; w == nil || w.Parameters != 12864 || w.Tensors != 3 || fmt.Sprint(w.DTypes) != "[BF16 F32]" {
		t.Errorf("inspect on plain distribution: weights %+v", in.Weights)
	}
	if text := e.ok("inspect", addr+"/team/gg:1.0.0").Stdout; !strings.Contains(text, "256.0K parameters in 2 tensors (gguf; Q4_K, Q6_K), llama, Q4_K_M, context 4096") {
		t.Errorf("inspect text: %s", text)
	}
	if in := decode[catalog.Inspection](t, e.ok("inspect", addr+"/team/junk:1.0.0", "--output", "json").Stdout); in.Weights != nil {
		t.Errorf("random bytes named .safetensors gave weights %+v", in.Weights)
	}

	// A rebuilt index reads them again.
	p.stop()
	os.Remove(filepath.Join(data, "modelreg", "index.db"))
	p = startServeAt(t, data, "127.0.0.1:0", "--reindex")
	addr = p.reg.Addr
	check("after a rebuild")
}
