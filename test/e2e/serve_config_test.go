package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/modelreg/modelreg/pkg/wire"
)

// serve --config mirrors the flags: data and policy come from the file,
// and a flag given on the command line wins over its field.
func TestServeConfigMirrorsFlags(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "from-config")
	writeFile(t, filepath.Join(dir, "a.yaml"), "version: 1\nstages:\n  release:\n    lineage: {required: true}\n", 0o644)
	writeFile(t, filepath.Join(dir, "b.yaml"), "version: 1\nstages:\n  canary:\n    lineage: {required: true}\n", 0o644)
	cfg := filepath.Join(dir, "serve.yaml")
	writeFile(t, cfg, "data: "+data+"\npolicy: "+filepath.Join(dir, "a.yaml")+"\n", 0o644)

	reg := startServerIn(t, t.TempDir(), "--config", cfg) // the harness's --data is a flag: it wins
	var st wire.Status
	apiGet(t, reg.Addr, "status", &st)
	if !slices.Equal(st.ProtectedStages, []string{"release"}) {
		t.Errorf("protected stages from the file's policy: %v", st.ProtectedStages)
	}
	if _, err := os.Stat(filepath.Join(data, "modelreg")); err == nil {
		t.Error("the file's data directory was used though --data was given")
	}
	reg = startServerIn(t, t.TempDir(), "--config", cfg, "--policy", filepath.Join(dir, "b.yaml"))
	apiGet(t, reg.Addr, "status", &st)
	if !slices.Equal(st.ProtectedStages, []string{"canary"}) {
		t.Errorf("--policy did not override the file: %v", st.ProtectedStages)
	}
	// Without --data, the file's data directory holds the registry.
	e := newEnv(t)
	r := e.exec("", nil, modelregBin, "serve", "--config", cfg, "--addr", "127.0.0.1:0", "--bogus-flag")
	if r.Code == 0 {
		t.Fatal("an unknown flag was accepted")
	}
	p := startServe(t, data, []string{"serve", "--config", cfg, "--addr", "127.0.0.1:0", "--log-format", "json"})
	apiGet(t, p.Addr, "status", &st)
	if _, err := os.Stat(filepath.Join(data, "modelreg")); err != nil {
		t.Errorf("the file's data directory was not used: %v", err)
	}
}
