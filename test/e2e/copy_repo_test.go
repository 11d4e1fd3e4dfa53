package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/wire"
)

// copyPolicy is the destinations' policy: staging needs alice, production
// alice and carol; the dev registry's record key is listed, so its copied
// history is trusted (as its history, never as the destination's).
const copyPolicy = `version: 1
keys:
  alice: alice.pub
  carol: carol.pub
registries:
  dev: dev-registry.pub
stages:
  staging:
    signatures: {keys: [alice], threshold: 1}
  production:
    signatures: {keys: [alice, carol], threshold: 2}
`

// modelreg copy of a stage and of a whole repository (--all, --stages),
// from a dev modelreg serve to a prod modelreg serve and to plain
// distribution, and from plain distribution back to modelreg serve: the
// versions arrive with every signature (cosign v2 legacy and v3 bundle
// verify), stages only through the destination's gate (a production that
// needs two signatures refuses a version signed once, the other stages
// still move, exit 1), a second --all sends nothing, the dev history shows
// as "history at team/m at dev", never as the destination's, and lineage
// walks resolve the base model at the destination once dev is stopped.
func TestCopyStagesAndRepository(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	devProc := startServeAt(t, t.TempDir(), "127.0.0.1:0")
	dev := devProc.reg
	var st wire.Status
	apiGet(t, dev.Addr, "status", &st)
	writeFile(t, filepath.Join(e.dir, "dev-registry.pub"), st.ServerKey, 0o644)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), copyPolicy, 0o644)
	prod := startServer(t, "--policy", filepath.Join(e.dir, "policy.yaml"))
	plain := startPlainRegistry(t)

	// dev: a base model, and team/m made from it. 1.0.0 is signed by alice
	// and carol (legacy, so cosign v2 verifies it), 1.1.0 by alice alone (a
	// bundle). dev protects nothing: staging holds 1.0.0, production 1.1.0.
	base := dev.Addr + "/team/base:1.0.0"
	pushVersion(t, e, base, "base weights")
	e.ok("lineage", "add", base, "--dataset", "s3://data/base-corpus.parquet")
	src := filepath.Join(e.dir, "m")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 1<<20, 7)
	m10 := dev.Addr + "/team/m:1.0.0"
	e.ok("push", m10, src, "--base-model", base, "--dataset", "s3://data/train.parquet")
	d10 := resolve(t, e, m10)
	e.ok("sign", m10, "--key", "alice.key", "--format", "legacy")
	e.cosign(cosign2Bin, nil, "sign", "--key", "carol.key", "--tlog-upload=false", "-y", dev.Addr+"/team/m@"+d10)
	e.ok("promote", m10, "--to", "staging")
	e.ok("promote", m10, "--to", "production")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 1<<20, 8)
	m11 := dev.Addr + "/team/m:1.1.0"
	e.ok("push", m11, src, "--base-model", base)
	d11 := resolve(t, e, m11)
	e.ok("sign", m11, "--key", "alice.key")
	e.ok("promote", m11, "--to", "production")

	// The base model goes to prod under another path (found there through
	// the index), to plain under the same path.
	e.ok("copy", dev.Addr+"/team/base", prod.Addr+"/models/base", "--all")
	e.ok("copy", dev.Addr+"/team/base", plain.Addr+"/team/base", "--all")

	// A stage: its version under its version tag, and the stage itself
	// through prod's gate, which writes its own record.
	rep := decode[client.CopyReport](t, e.ok("copy", dev.Addr+"/team/m:staging", prod.Addr+"/team/m", "--stages", "--output", "json").Stdout)
	if len(rep.Versions) != 1 || rep.Versions[0].Digest != d10 || rep.Versions[0].Tags[0] != "1.0.0" || rep.Versions[0].Status != client.CopyCopied ||
		len(rep.Stages) != 1 || rep.Stages[0].Status != client.StagePromoted || rep.Stages[0].Record == "" {
		t.Fatalf("copy of a stage: %+v", rep)
	}
	if got := resolve(t, e, prod.Addr+"/team/m:staging"); got != d10 {
		t.Fatalf("prod staging holds %s, want %s", got, d10)
	}

	// Everything, with the stages: production (1.1.0, alice only) is
	// refused by prod's gate, staging is already there; exit 1.
	r := e.modelreg("copy", dev.Addr+"/team/m", prod.Addr+"/team/m", "--all", "--stages", "--output", "json")
	if r.Code != 1 || !strings.Contains(r.Stderr, "refused production") {
		t.Fatalf("copy --all --stages: exit %d, want 1 naming production\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep = decode[client.CopyReport](t, r.Stdout)
	stages := map[string]client.StageCopy{}
	for _, s := range rep.Stages {
		stages[s.Stage] = s
	}
	if rep.VersionsCopied != 1 || rep.VersionsUnchanged != 1 || rep.StagesRefused != 1 ||
		stages["production"].Status != client.StageRefused || !strings.Contains(stages["production"].Error, "1 of 2") ||
		stages["staging"].Status != client.StageUnchanged {
		t.Fatalf("copy --all --stages: %+v", rep)
	}
	t.Logf("first --all: %d manifests and blobs sent, %d bytes; %d already there", rep.Copied, rep.Bytes, rep.Skipped)
	if r := e.modelreg("inspect", prod.Addr+"/team/m:production"); r.Code == 0 {
		t.Fatalf("prod's production moved despite the refusal:\n%s", r.Stdout)
	}
	// Again: nothing new.
	again := decode[client.CopyReport](t, e.ok("copy", dev.Addr+"/team/m", prod.Addr+"/team/m", "--all", "--output", "json").Stdout)
	if again.Copied != 0 || again.Bytes != 0 || again.VersionsCopied != 0 || again.VersionsUnchanged != 2 {
		t.Errorf("a second --all sent %d pieces, %d bytes: %+v", again.Copied, again.Bytes, again)
	}
	t.Logf("second --all: %d sent, %d bytes; %d already there", again.Copied, again.Bytes, again.Skipped)

	// Within one registry the weights are mounted, not sent.
	within := decode[client.CopyResult](t, e.ok("copy", prod.Addr+"/team/m:1.1.0", prod.Addr+"/team/m3", "--output", "json").Stdout)
	if within.Mounted == 0 || within.Bytes >= 1<<20 {
		t.Errorf("a copy within one registry sent %d bytes, mounted %d blobs", within.Bytes, within.Mounted)
	}
	t.Logf("within one registry: %d sent (%d bytes), %d mounted", within.Copied, within.Bytes, within.Mounted)

	// Signatures verify at prod with both cosigns and modelreg verify.
	e.cosign(cosign2Bin, nil, "verify", "--key", "carol.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/m@"+d10)
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/m@"+d11)
	if v := decode[client.Verdict](t, e.ok("verify", prod.Addr+"/team/m:1.0.0", "--stage", "production", "--policy", "policy.yaml", "--output", "json").Stdout); !v.OK {
		t.Errorf("modelreg verify at prod: %+v", v.Decisions)
	}

	// prod's own history is its own: staging has its one record, production
	// none; dev's records are "history at team/m at dev", trusted.
	own := decode[[]promotion.Record](t, e.ok("history", prod.Addr+"/team/m", "--stage", "staging", "--output", "json").Stdout)
	if len(own) != 1 || !own[0].Trusted || own[0].Digest != d10 {
		t.Errorf("prod's staging history: %+v", own)
	}
	if out := e.ok("history", prod.Addr+"/team/m", "--stage", "production", "--output", "json").Stdout; strings.TrimSpace(out) != "[]" {
		t.Errorf("prod's production history counts copied records:\n%s", out)
	}
	copied := decode[[]promotion.Copied](t, e.ok("history", prod.Addr+"/team/m", "--stage", "production", "--copied", "--output", "json").Stdout)
	if len(copied) != 1 || !copied[0].Trusted || copied[0].Registry != "dev" || copied[0].Repository != "team/m" || len(copied[0].Records) != 2 ||
		copied[0].Records[0].Digest != d11 || copied[0].Records[1].Digest != d10 || copied[0].KeyID != st.ServerKeyID {
		t.Errorf("prod's copy of dev's production history: %+v", copied)
	}
	if out := e.ok("history", prod.Addr+"/team/m", "--stage", "production").Stdout; !strings.Contains(out, "history at team/m at dev") || !strings.Contains(out, "trusted") {
		t.Errorf("history text:\n%s", out)
	}
	e.ok("history", prod.Addr+"/team/m", "--stage", "staging", "--verify")
	if page := httpGetBody(t, "http://"+prod.Addr+"/models/team/m"); !strings.Contains(page, "History at other registries") || !strings.Contains(page, "production: history at team/m at dev (trusted") {
		t.Errorf("the model page does not show dev's history apart:\n%s", page)
	}

	// To plain distribution, with its stages through the client's check of
	// the policy: production refused there too, staging promoted (a client
	// record, the plain registry's own history).
	r = e.modelreg("copy", dev.Addr+"/team/m", plain.Addr+"/team/m", "--all", "--stages", "--policy", "policy.yaml", "--output", "json")
	rep = decode[client.CopyReport](t, r.Stdout)
	if r.Code != 1 || rep.VersionsCopied != 2 || rep.StagesRefused != 1 {
		t.Fatalf("copy to plain: exit %d %+v\n%s", r.Code, rep, r.Stderr)
	}
	if again := decode[client.CopyReport](t, e.ok("copy", dev.Addr+"/team/m", plain.Addr+"/team/m", "--all", "--output", "json").Stdout); again.Bytes != 0 || again.Copied != 0 {
		t.Errorf("a second --all to plain sent %d pieces, %d bytes", again.Copied, again.Bytes)
	}
	e.cosign(cosign2Bin, nil, "verify", "--key", "carol.pub", "--insecure-ignore-tlog=true", plain.Addr+"/team/m@"+d10)
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", plain.Addr+"/team/m@"+d11)
	plainOwn := decode[[]promotion.Record](t, e.ok("history", plain.Addr+"/team/m", "--stage", "staging", "--output", "json").Stdout)
	if len(plainOwn) != 1 || plainOwn[0].Repository != plain.Addr+"/team/m" {
		t.Errorf("plain's own staging history: %+v", plainOwn)
	}
	plainCopied := decode[[]promotion.Copied](t, e.ok("history", plain.Addr+"/team/m", "--stage", "production", "--copied", "--policy", "policy.yaml", "--output", "json").Stdout)
	if len(plainCopied) != 1 || !plainCopied[0].Trusted || plainCopied[0].Registry != "dev" || len(plainCopied[0].Records) != 2 {
		t.Errorf("plain's copy of dev's production history: %+v", plainCopied)
	}

	// Back from plain to modelreg serve: plain's staging record arrives as
	// untrusted history at plain, dev's as trusted history at dev.
	e.ok("copy", plain.Addr+"/team/m", prod.Addr+"/team/m2", "--all", "--stages")
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", prod.Addr+"/team/m2@"+d11)
	if got := resolve(t, e, prod.Addr+"/team/m2:staging"); got != d10 {
		t.Errorf("prod team/m2 staging holds %s, want %s", got, d10)
	}
	back := decode[[]promotion.Copied](t, e.ok("history", prod.Addr+"/team/m2", "--stage", "staging", "--copied", "--output", "json").Stdout)
	sources := map[string]promotion.Copied{}
	for _, c := range back {
		sources[c.Source()] = c
	}
	if c := sources["team/m at dev"]; !c.Trusted || len(c.Records) != 1 {
		t.Errorf("dev's staging history at prod team/m2: %+v", back)
	}
	if c := sources[plain.Addr+"/team/m"]; c.Trusted || len(c.Records) != 1 || c.Problem == "" {
		t.Errorf("plain's staging history at prod team/m2: %+v", back)
	}

	// A registry without the base model: the walk falls back to the
	// recorded host while it is reachable.
	bare := startPlainRegistry(t)
	e.ok("copy", m10, bare.Addr+"/team/m")
	tree := decode[lineage.Node](t, e.ok("lineage", bare.Addr+"/team/m:1.0.0", "--up", "--format", "json").Stdout)
	checkBaseFound(t, tree, "")

	// dev goes away: lineage walks at prod and plain find the base model
	// where they run, by digest; where it is not, the note says where the
	// walk looked.
	devProc.stop()
	if out := e.ok("lineage", bare.Addr+"/team/m:1.0.0", "--up").Stdout; !strings.Contains(out, "not found: not in "+bare.Addr+"/team/base; at the recorded host") {
		t.Errorf("lineage at a registry without the base, dev stopped:\n%s", out)
	}
	tree = decode[lineage.Node](t, e.ok("lineage", prod.Addr+"/team/m:1.0.0", "--up", "--format", "json").Stdout)
	checkBaseFound(t, tree, prod.Addr+"/models/base")
	tree = decode[lineage.Node](t, e.ok("lineage", plain.Addr+"/team/m:1.1.0", "--up", "--format", "json").Stdout)
	checkBaseFound(t, tree, plain.Addr+"/team/base")
	if out := e.ok("lineage", prod.Addr+"/team/m:1.0.0", "--up").Stdout; !strings.Contains(out, "[at "+prod.Addr+"/models/base]") || !strings.Contains(out, "s3://data/base-corpus.parquet") {
		t.Errorf("lineage tree at prod:\n%s", out)
	}
}

// httpGetBody returns the body of a 200 answer.
func httpGetBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// checkBaseFound checks that the walk read the base model at where (""
// for the registry its reference names) and went on into its own lineage.
func checkBaseFound(t *testing.T, root lineage.Node, where string) {
	t.Helper()
	for _, c := range root.Children {
		if c.Kind != lineage.KindModel {
			continue
		}
		if c.At != where || c.Note != "" || len(c.Children) == 0 || c.Children[0].Ref != "s3://data/base-corpus.parquet" {
			b, _ := json.MarshalIndent(root, "", "  ")
			t.Errorf("the base model should be read at %s:\n%s", where, b)
		}
		return
	}
	t.Errorf("no model input in %+v", root)
}
