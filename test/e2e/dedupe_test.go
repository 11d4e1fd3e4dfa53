package e2e

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/modelreg/modelreg/pkg/transfer"
)

// A fresh CI runner (empty cache, a copied model directory: new inodes)
// re-pushing weights the registry holds sends none of them when it hashes
// first; streaming them would send them all.
func TestFreshRunnerSendsNoKnownWeights(t *testing.T) {
	reg := startServer(t)
	first := newEnv(t)
	src := filepath.Join(first.dir, "m")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 48<<20, 7)
	writeFile(t, filepath.Join(src, "config.json"), `{"layers": 4}`, 0o644)
	first.ok("push", reg.Addr+"/team/fresh:1.0.0", src)

	for _, c := range []struct {
		mode    string
		maxSent int64
		minSent int64
	}{{"hash", 4 << 10, 0}, {"stream", 1 << 62, 48 << 20}} {
		t.Run(c.mode, func(t *testing.T) {
			runner := newEnv(t) // its own HOME: an empty digest cache
			copied := filepath.Join(runner.dir, "m")
			if out, err := exec.Command("cp", "-r", src, copied).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			res := decode[transfer.PushResult](t, runner.ok("push", reg.Addr+"/team/fresh:1.1.0-"+c.mode, copied, "--dedupe", c.mode, "--output", "json").Stdout)
			if res.Uploaded > c.maxSent || res.Uploaded < c.minSent {
				t.Errorf("--dedupe %s from a fresh runner sent %d bytes, want between %d and %d", c.mode, res.Uploaded, c.minSent, c.maxSent)
			}
			t.Logf("--dedupe %s: sent %d of %d bytes", c.mode, res.Uploaded, res.Size)
		})
	}
	first.fails([]string{"--dedupe", "auto, hash or stream"}, "push", reg.Addr+"/team/fresh:9.0.0", src, "--dedupe", "fast")
}
