package e2e

import (
	"path/filepath"
	"testing"

	"github.com/modelreg/modelreg/pkg/wire"
)

// modelreg delete: recorded by modelreg serve (a tombstone among the
// deleted version's referrers, its tag retired for good), refused for a
// version a stage points at, for a stage, and on a registry that would
// keep no record.
func TestDelete(t *testing.T) {
	reg := startServer(t)
	plain := startPlainRegistry(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "model.safetensors"), "wrong split", 0o644)
	repo := reg.Addr + "/team/d"
	e.ok("push", repo+":0.9.0", src)
	d := resolve(t, e, repo+":0.9.0")
	e.ok("delete", repo+":0.9.0", "--reason", "trained on the wrong split")
	e.fails([]string{"0.9.0"}, "pull", repo+":0.9.0", "-o", filepath.Join(e.dir, "gone"))
	var refs wire.Referrers
	apiGet(t, reg.Addr, "models/team/d/referrers/"+d, &refs)
	tombstones := 0
	for _, r := range refs.Referrers {
		if r.Kind == "tombstone" {
			tombstones++
		}
	}
	if tombstones != 1 {
		t.Errorf("the deleted version has %d tombstones: %+v", tombstones, refs.Referrers)
	}
	writeFile(t, filepath.Join(src, "model.safetensors"), "right split", 0o644)
	e.fails([]string{"deleted", "never reused"}, "push", repo+":0.9.0", src)

	e.ok("push", repo+":1.0.0", src)
	e.ok("promote", repo+":1.0.0", "--to", "staging")
	e.fails([]string{"staging"}, "delete", repo+":1.0.0")
	e.fails([]string{"is a stage"}, "delete", repo+":staging")

	e.ok("push", plain.Addr+"/team/d:1.0.0", src)
	e.fails([]string{"not modelreg serve", "no record"}, "delete", plain.Addr+"/team/d:1.0.0")
}
