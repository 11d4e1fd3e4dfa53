package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/fixture"
	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/index"
)

// What neighbours write, pushed with the real oras as they would: a Docker
// Model Runner artifact (config v0.2, GGUF and license layers) and a KitOps
// ModelKit (Kitfile config, tar layer). modelreg inspects both (their
// config's facts, the GGUF header's), pulls them, and modelreg serve makes
// them searchable (weights.*, labels.kitfile.*).
func TestNeighbourFormats(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	dmr := filepath.Join(e.dir, "dmr")
	writeFile(t, filepath.Join(dmr, "model.gguf"), string(fixture.GGUF(map[string]any{"general.architecture": "qwen2", "general.file_type": uint32(7), "qwen2.context_length": uint32(32768)},
		100, []fixture.Tensor{{Name: "w", DType: "8", Shape: []int64{32, 32}}}, 5)), 0o644)
	writeFile(t, filepath.Join(dmr, "LICENSE"), "Apache-2.0\n", 0o644)
	writeFile(t, filepath.Join(dmr, "config.json"), `{"config":{"format":"gguf","quantization":"Q8_0","parameters":"494 M","architecture":"qwen2","size":"531 MiB"},"descriptor":{"created":"2026-02-01T00:00:00Z"}}`, 0o644)
	push := func(dir string, args ...string) {
		t.Helper()
		r := e.exec("", nil, "sh", "-c", fmt.Sprintf("cd %s && %s push --plain-http %s", dir, orasBin, strings.Join(args, " ")))
		if r.Code != 0 {
			t.Fatalf("oras push: %s", r.Stderr)
		}
	}
	push(dmr, "--config", "config.json:application/vnd.docker.ai.model.config.v0.2+json", reg.Addr+"/ai/qwen:0.5b",
		"model.gguf:application/vnd.docker.ai.gguf.v3", "LICENSE:application/vnd.docker.ai.license")

	kit := filepath.Join(e.dir, "kit")
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	weights := []byte("kit weights")
	tw.WriteHeader(&tar.Header{Name: "model/weights.bin", Mode: 0o644, Size: int64(len(weights)), Typeflag: tar.TypeReg})
	tw.Write(weights)
	tw.Close()
	writeFile(t, filepath.Join(kit, "model.tar"), tb.String(), 0o644)
	writeFile(t, filepath.Join(kit, "Kitfile.json"), `{"manifestVersion":"1.0","package":{"name":"fraud-kit","version":"2.1.0","description":"fraud detector","authors":["Ada","Grace"]},"model":{"path":"model"}}`, 0o644)
	push(kit, "--config", "Kitfile.json:application/vnd.kitops.modelkit.config.v1+json", reg.Addr+"/team/kit:2.1.0", "model.tar:application/vnd.kitops.modelkit.model.v1.tar")

	in := decode[catalog.Inspection](t, e.ok("inspect", reg.Addr+"/ai/qwen:0.5b", "--output", "json").Stdout)
	if in.Version.Format != "docker-model" || in.Producer["quantization"] != "Q8_0" || in.Producer["parameters"] != "494 M" || in.Producer["created"] == "" ||
		in.Weights == nil || in.Weights.Architecture != "qwen2" || in.Weights.ContextLength != 32768 {
		t.Errorf("Docker model: format %q, producer %v, weights %+v", in.Version.Format, in.Producer, in.Weights)
	}
	kin := decode[catalog.Inspection](t, e.ok("inspect", reg.Addr+"/team/kit:2.1.0", "--output", "json").Stdout)
	if kin.Version.Format != "kitops" || kin.Producer["name"] != "fraud-kit" || kin.Producer["authors"] != "Ada, Grace" || kin.Producer["description"] != "fraud detector" {
		t.Errorf("KitOps: format %q, producer %v", kin.Version.Format, kin.Producer)
	}
	if text := e.ok("inspect", reg.Addr+"/team/kit:2.1.0").Stdout; !strings.Contains(text, "Kitfile name:") || !strings.Contains(text, "fraud-kit") {
		t.Errorf("inspect text: %s", text)
	}

	out := filepath.Join(e.dir, "out-dmr")
	e.ok("pull", reg.Addr+"/ai/qwen:0.5b", "-o", out)
	sameTree(t, map[string]string{"model.gguf": tree(t, dmr)["model.gguf"], "LICENSE": tree(t, dmr)["LICENSE"]}, tree(t, out))
	kout := filepath.Join(e.dir, "out-kit")
	e.ok("pull", reg.Addr+"/team/kit:2.1.0", "-o", kout)
	if got := tree(t, kout); len(got) != 1 || got["model/weights.bin"] == "" {
		t.Errorf("the ModelKit pulled as %v", got)
	}

	for q, want := range map[string]string{
		"weights.architecture = 'qwen2' and weights.quantization = 'Q8_0'":       "ai/qwen",
		"labels.kitfile.name = 'fraud-kit' and labels.kitfile.version = '2.1.0'": "team/kit",
	} {
		var got []string
		for start := time.Now(); len(got) == 0 && time.Since(start) < 20*time.Second; time.Sleep(100 * time.Millisecond) {
			got = nil
			for _, v := range decode[struct{ Versions []index.VersionRow }](t, e.ok("search", q, "--registry", reg.Addr, "--output", "json").Stdout).Versions {
				got = append(got, v.Repository)
			}
		}
		if fmt.Sprint(got) != "["+want+"]" {
			t.Errorf("%s: %v, want [%s]", q, got, want)
		}
	}
}
