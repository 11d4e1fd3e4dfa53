package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/client"
)

// modelreg copy takes a version with everything hanging on it from one
// registry to another: the destination's cosign v3 (bundle) and v2
// (legacy .sig tag) verify the signatures, its modelreg verify and gate
// accept them, the evaluation and lineage come along; a second run sends
// nothing; plain distribution works as source and destination; the
// destination's own policy still decides its stages.
func TestCopy(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), `version: 1
keys:
  alice: alice.pub
  bob: bob.pub
  carol: carol.pub
stages:
  production:
    signatures: {keys: [alice, carol], threshold: 2}
  release:
    signatures: {keys: [alice, bob], threshold: 2}
`, 0o644)
	dev := startServer(t)
	prod := startServer(t, "--policy", filepath.Join(e.dir, "policy.yaml"))
	plain := startPlainRegistry(t)

	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 2<<20, 5)
	// 1.0.0 carries legacy signatures (modelreg's and cosign v2's), 1.1.0 a
	// bundle: cosign v2 reads no legacy signature of a digest that also has
	// a bundle (docs/signing.md).
	from := dev.Addr + "/team/c:1.0.0"
	e.ok("push", from, src, "--dataset", "s3://data/train.parquet", "--metric", "accuracy=0.9")
	d := resolve(t, e, from)
	e.ok("sign", from, "--key", "alice.key", "--format", "legacy")
	e.cosign(cosign2Bin, nil, "sign", "--key", "carol.key", "--tlog-upload=false", "-y", dev.Addr+"/team/c@"+d)
	e.ok("eval", "add", from, "--metric", "auc=0.97")
	e.ok("promote", from, "--to", "staging")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 2<<20, 6)
	from11 := dev.Addr + "/team/c:1.1.0"
	e.ok("push", from11, src)
	d11 := resolve(t, e, from11)
	e.ok("sign", from11, "--key", "alice.key")

	res := decode[client.CopyResult](t, e.ok("copy", from, prod.Addr+"/team/c", "--output", "json").Stdout)
	if res.Digest != d || res.Copied == 0 || !strings.Contains(strings.Join(res.LegacyTags, ","), ".sig") {
		t.Fatalf("copy: %+v", res)
	}
	e.ok("copy", from11, prod.Addr+"/team/c")
	to := prod.Addr + "/team/c:1.0.0"
	if got := resolve(t, e, to); got != d {
		t.Fatalf("the copy has digest %s, want %s", got, d)
	}
	e.cosign(cosign2Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/c@"+d)
	e.cosign(cosign2Bin, nil, "verify", "--key", "carol.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/c@"+d)
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/c@"+d11)
	v := decode[client.Verdict](t, e.ok("verify", to, "--stage", "production", "--policy", "policy.yaml", "--output", "json").Stdout)
	if !v.OK {
		t.Errorf("modelreg verify at the destination: %+v", v.Decisions)
	}
	in := decode[catalog.Inspection](t, e.ok("inspect", to, "--output", "json").Stdout)
	if len(in.Evaluations) != 1 || in.Evaluations[0].Metrics["auc"] != 0.97 || len(in.Stages) != 0 {
		t.Errorf("at the destination: evaluations %+v, stages %v (stages are not copied)", in.Evaluations, in.Stages)
	}
	if out := e.ok("lineage", to, "--up").Stdout; !strings.Contains(out, "s3://data/train.parquet") {
		t.Errorf("lineage at the destination:\n%s", out)
	}
	// The destination's gate decides: production (alice and carol) passes,
	// release (alice and bob) does not.
	e.ok("promote", to, "--to", "production", "--policy", "policy.yaml")
	e.fails([]string{"1 of 2"}, "promote", to, "--to", "release", "--policy", "policy.yaml")

	// Again: nothing new to send.
	again := decode[client.CopyResult](t, e.ok("copy", from, prod.Addr+"/team/c", "--output", "json").Stdout)
	if again.Copied != 0 || again.Bytes != 0 {
		t.Errorf("a second copy sent %d pieces, %d bytes", again.Copied, again.Bytes)
	}
	// Through plain distribution and back.
	e.ok("copy", from, plain.Addr+"/team/c")
	e.ok("copy", from11, plain.Addr+"/team/c")
	e.cosign(cosign2Bin, nil, "verify", "--key", "carol.pub", "--insecure-ignore-tlog=true", plain.Addr+"/team/c@"+d)
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", plain.Addr+"/team/c@"+d11)
	e.ok("copy", plain.Addr+"/team/c:1.1.0", prod.Addr+"/team/c2:1.1.0")
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/c2@"+d11)
	// A stage copies the version it points at, under its version tag; the
	// stage itself moves only with --stages (TestCopyStagesAndRepository).
	e.ok("copy", dev.Addr+"/team/c:staging", prod.Addr+"/team/c3")
	if got := resolve(t, e, prod.Addr+"/team/c3:1.0.0"); got != d {
		t.Errorf("the stage's version has digest %s at the destination, want %s", got, d)
	}
	if r := e.modelreg("inspect", prod.Addr+"/team/c3:staging"); r.Code == 0 {
		t.Errorf("copying a stage without --stages set it at the destination")
	}
}
