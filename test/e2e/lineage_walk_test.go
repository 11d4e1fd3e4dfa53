package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/audit"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/signature"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dataset -> base model -> fine-tune -> distilled, across three
// repositories: --up walks it from the bottom on any registry, --down from
// the dataset and the base model through modelreg serve.
func TestLineageWalkAcrossRepositories(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	push := func(ref, content string, flags ...string) string {
		dir := filepath.Join(e.dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref))
		writeFile(t, filepath.Join(dir, "model.safetensors"), content, 0o644)
		return strings.TrimSpace(e.ok(append([]string{"push", ref, dir}, flags...)...).Stdout)
	}
	base := push(reg.Addr+"/team/base:1.0.0", "base", "--dataset", "s3://corpus/pretrain@sha256:"+strings.Repeat("b", 64), "--code", "https://github.com/acme/pretrain@1111111")
	tuned := push(reg.Addr+"/team/tuned:1.0.0", "tuned", "--base-model", reg.Addr+"/team/base:1.0.0", "--dataset", "s3://data/fraud.parquet")
	distilled := push(reg.Addr+"/team/distilled:1.0.0", "distilled", "--base-model", reg.Addr+"/team/tuned:1.0.0")
	e.ok("lineage", "add", reg.Addr+"/team/tuned:1.0.0", "--code", "https://github.com/acme/finetune@2222222")

	tree := e.ok("lineage", reg.Addr+"/team/distilled:1.0.0", "--up").Stdout
	for _, want := range []string{"team/distilled@" + distilled, "└── model " + reg.Addr + "/team/tuned@" + tuned, "model " + reg.Addr + "/team/base@" + base,
		"dataset s3://corpus/pretrain", "code https://github.com/acme/finetune @2222222", "dataset s3://data/fraud.parquet"} {
		if !strings.Contains(tree, want) {
			t.Errorf("--up tree lacks %q:\n%s", want, tree)
		}
	}
	root := decode[lineage.Node](t, e.ok("lineage", reg.Addr+"/team/distilled:1.0.0", "--up", "--format", "json").Stdout)
	if len(root.Children) != 1 || root.Children[0].Digest != tuned || len(root.Children[0].Children) != 3 {
		t.Fatalf("--up json: %+v", root)
	}
	if dot := e.ok("lineage", reg.Addr+"/team/distilled:1.0.0", "--up", "--format", "dot").Stdout; !strings.HasPrefix(dot, "digraph lineage {") || strings.Count(dot, "->") != 6 {
		t.Errorf("dot:\n%s", dot)
	}
	if mm := e.ok("lineage", reg.Addr+"/team/distilled:1.0.0", "--up", "--format", "mermaid").Stdout; !strings.HasPrefix(mm, "graph BT") || strings.Count(mm, "-->") != 6 {
		t.Errorf("mermaid:\n%s", mm)
	}
	down := e.ok("lineage", reg.Addr+"/team/base:1.0.0", "--down").Stdout
	if !strings.Contains(down, "team/tuned@"+tuned) || !strings.Contains(down, "    └── model "+reg.Addr+"/team/distilled@"+distilled) {
		t.Errorf("--down from the base model:\n%s", down)
	}
	fromData := decode[lineage.Node](t, e.ok("lineage", "--down", "--of", "s3://corpus/pretrain", "--registry", reg.Addr, "--format", "json").Stdout)
	if len(fromData.Children) != 1 || fromData.Children[0].Digest != base || fromData.Children[0].Children[0].Digest != tuned ||
		fromData.Children[0].Children[0].Children[0].Digest != distilled {
		t.Errorf("--down from the dataset: %+v", fromData)
	}

	plain := startPlainRegistry(t)
	pd := filepath.Join(e.dir, "plainmodel")
	writeFile(t, filepath.Join(pd, "w.bin"), "x", 0o644)
	e.ok("push", plain.Addr+"/team/p:1.0.0", pd, "--dataset", "s3://d/x")
	if out := e.ok("lineage", plain.Addr+"/team/p:1.0.0", "--up").Stdout; !strings.Contains(out, "dataset s3://d/x") {
		t.Errorf("--up on a plain registry:\n%s", out)
	}
	e.fails([]string{"--down needs modelreg serve"}, "lineage", plain.Addr+"/team/p:1.0.0", "--down")
}

// A's parent is B and B's parent is A: the walk ends and says so.
func TestLineageCycle(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	a := pushVersion(t, e, reg.Addr+"/team/a:1.0.0", "A")
	b := pushVersion(t, e, reg.Addr+"/team/b:1.0.0", "B")
	e.ok("lineage", "add", reg.Addr+"/team/a:1.0.0", "--base-model", reg.Addr+"/team/b:1.0.0")
	e.ok("lineage", "add", reg.Addr+"/team/b:1.0.0", "--base-model", reg.Addr+"/team/a:1.0.0")
	out := e.ok("lineage", reg.Addr+"/team/a:1.0.0", "--up").Stdout
	want := "cycle: " + reg.Addr + "/team/a@" + a + " -> " + reg.Addr + "/team/b@" + b + " -> " + reg.Addr + "/team/a@" + a
	if !strings.Contains(out, want) {
		t.Errorf("cycle not reported:\n%s", out)
	}
	if out := e.ok("lineage", reg.Addr+"/team/a:1.0.0", "--down").Stdout; !strings.Contains(out, "cycle: ") {
		t.Errorf("--down cycle not reported:\n%s", out)
	}
}

const lineagePolicy = `version: 1
keys:
  alice: alice.pub
  bob: bob.pub
  carol: carol.pub
stages:
  staging:
    lineage: {required: true}
  production:
    lineage: {required: true, signed: true}
    evaluations: ["accuracy >= 0.9"]
`

// The real cosign attest (v3 bundle and v2 .att) writes SLSA provenance
// that modelreg reads as lineage and verifies with the policy's keys; what
// modelreg lineage add --sign writes, cosign verify-attestation accepts.
func TestSignedLineageAndSLSA(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), lineagePolicy, 0o644)
	prov := `{"buildDefinition":{"buildType":"https://example.com/train/v1","externalParameters":{"epochs":3},
"resolvedDependencies":[{"uri":"s3://data/train.parquet","digest":{"sha256":"` + strings.Repeat("c", 64) + `"}},
{"uri":"git+https://github.com/acme/train","digest":{"gitCommit":"3333333"}}]},
"runDetails":{"builder":{"id":"https://ci.example.com/builder"},"metadata":{"invocationId":"run-77"}}}`
	writeFile(t, filepath.Join(e.dir, "prov.json"), prov, 0o644)
	repo := reg.Addr + "/team/attested"
	v3 := pushVersion(t, e, repo+":3.0.0", "attested by cosign v3")
	v2 := pushVersion(t, e, repo+":2.0.0", "attested by cosign v2")
	e.cosign(cosign3Bin, nil, "attest", "--key", "bob.key", "--type", "slsaprovenance1", "--predicate", "prov.json", "--tlog-upload=false", "--use-signing-config=false", "-y", repo+"@"+v3)
	e.cosign(cosign2Bin, nil, "attest", "--key", "carol.key", "--type", "slsaprovenance1", "--predicate", "prov.json", "--tlog-upload=false", "-y", repo+"@"+v2)
	for _, c := range []struct{ digest, key string }{{v3, "bob"}, {v2, "carol"}} {
		out := e.ok("lineage", repo+"@"+c.digest, "--up", "--policy", "policy.yaml").Stdout
		for _, want := range []string{"dataset s3://data/train.parquet sha256:" + strings.Repeat("c", 64) + " [signed]", "code https://github.com/acme/train @3333333 [signed]"} {
			if !strings.Contains(out, want) {
				t.Errorf("SLSA by %s read as lineage lacks %q:\n%s", c.key, want, out)
			}
		}
		v := decode[map[string]json.RawMessage](t, e.ok("verify", repo+"@"+c.digest, "--policy", "policy.yaml", "--stage", "staging", "--output", "json").Stdout)
		var sources []lineage.Source
		json.Unmarshal(v["lineage"], &sources)
		if len(sources) != 1 || !sources[0].Signed || sources[0].PredicateType != mediatypes.PredicateSLSAProvenanceV1 {
			t.Errorf("verify lineage of the %s attestation: %+v", c.key, sources)
		}
	}

	// modelreg's signed lineage is a cosign attestation.
	v4 := pushVersion(t, e, repo+":4.0.0", "modelreg signed lineage")
	e.ok("lineage", "add", repo+":4.0.0", "--sign", "--key", "alice.key", "--dataset", "s3://data/x.parquet")
	e.cosign(cosign3Bin, nil, "verify-attestation", "--key", "alice.pub", "--insecure-ignore-tlog=true", "--type", mediatypes.PredicateLineage, repo+"@"+v4)
}

// Lineage and evaluation requirements refuse what is missing, by name.
func TestLineageAndEvaluationPolicy(t *testing.T) {
	e, reg := gatedWith(t, lineagePolicy)
	repo := reg.Addr + "/team/checked"
	pushVersion(t, e, repo+":1.0.0", "no lineage")
	e.fails([]string{"a lineage record is required and none was found"}, "promote", repo+":1.0.0", "--to", "staging", "--policy", "policy.yaml")
	// The server refuses the same for a client that bypasses modelreg.
	r := e.exec("", nil, orasBin, "tag", "--plain-http", repo+":1.0.0", "staging")
	if r.Code == 0 || !strings.Contains(r.Stderr, "a lineage record is required") {
		t.Errorf("oras tag without lineage: exit %d %s", r.Code, r.Stderr)
	}
	e.ok("lineage", "add", repo+":1.0.0", "--dataset", "s3://data/a.parquet")
	e.ok("promote", repo+":1.0.0", "--to", "staging", "--policy", "policy.yaml")

	e.fails([]string{"a signed lineage attestation is required, but the lineage is only unsigned records",
		"evaluation bound accuracy >= 0.9: no evaluation of this version measures accuracy"}, "promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")
	e.ok("lineage", "add", repo+":1.0.0", "--sign", "--key", "alice.key", "--dataset", "s3://data/a.parquet")
	e.ok("eval", "add", repo+":1.0.0", "--metric", "accuracy=0.85", "--dataset", "s3://data/holdout.parquet")
	e.fails([]string{"evaluation bound accuracy >= 0.9 not met: the best evaluation measured accuracy = 0.85"}, "promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")

	// An evaluation about another digest, attached here, does not count.
	forgeEvaluation(t, reg.Addr, "team/checked", "1.0.0", "sha256:"+strings.Repeat("e", 64), 0.99)
	e.fails([]string{"the record evaluates sha256:" + strings.Repeat("e", 64) + ", not this version"}, "promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")

	writeFile(t, filepath.Join(e.dir, "results.json"), `{"metrics": {"accuracy": 0.93, "recall": 0.8}}`, 0o644)
	e.ok("eval", "add", repo+":1.0.0", "--file", "results.json")
	e.ok("promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")
	text := e.ok("inspect", repo+":1.0.0").Stdout
	if !strings.Contains(text, "accuracy = 0.93, recall = 0.8") || !strings.Contains(text, "REJECTED") {
		t.Errorf("inspect does not show the evaluations:\n%s", text)
	}
}

func gatedWith(t *testing.T, policy string) (*env, *registry) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policy, 0o644)
	return e, startServer(t, "--policy", filepath.Join(e.dir, "policy.yaml"))
}

func forgeEvaluation(t *testing.T, addr, name, tag, claims string, acc float64) {
	t.Helper()
	ctx := context.Background()
	repo := repoClient(t, addr, name)
	subject, err := repo.Resolve(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := json.Marshal(map[string]any{"subject": claims, "metrics": map[string]float64{"accuracy": acc}, "time": time.Now().UTC()})
	if _, err := signature.PushReferrer(ctx, repo, ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		mediatypes.ArtifactTypeEvaluation, mediatypes.ArtifactTypeEvaluation, blob, nil); err != nil {
		t.Fatal(err)
	}
}

// The audit report of a version promoted, rolled back and promoted again
// lists the three moves in order, with the right actors.
func TestAuditReport(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	repo := reg.Addr + "/team/audited"
	pushVersion(t, e, repo+":1.0.0", "one")
	dir := filepath.Join(e.dir, "two")
	writeFile(t, filepath.Join(dir, "model.safetensors"), "two", 0o644)
	v2 := strings.TrimSpace(e.ok("push", repo+":2.0.0", dir, "--dataset", "s3://data/train.parquet", "--code", "https://github.com/acme/train@abc1234").Stdout)
	e.ok("eval", "add", repo+":2.0.0", "--metric", "accuracy=0.91")
	e.ok("keygen", "--output-key-prefix", "alice")
	e.ok("sign", repo+":2.0.0", "--key", "alice.key")
	e.ok("promote", repo+":1.0.0", "--to", "production", "--actor", "ann")
	e.ok("promote", repo+":2.0.0", "--to", "production", "--actor", "ben", "--reason", "better recall")
	e.ok("rollback", repo, "--stage", "production", "--actor", "cat", "--reason", "latency regression")
	e.ok("promote", repo+":2.0.0", "--to", "production", "--actor", "dan", "--reason", "latency fixed upstream")

	writeFile(t, filepath.Join(e.dir, "policy.yaml"), "version: 1\nkeys:\n  alice: alice.pub\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n", 0o644)
	rep := decode[audit.Report](t, e.ok("audit", repo+":2.0.0", "--format", "json", "--policy", "policy.yaml").Stdout)
	if len(rep.Versions) != 1 || rep.Versions[0].Digest != v2 {
		t.Fatalf("report versions: %+v", rep.Versions)
	}
	v := rep.Versions[0]
	var moves []string
	for _, ev := range v.Stages {
		moves = append(moves, ev.Stage+" "+ev.Event+" by "+ev.Actor)
	}
	if got := strings.Join(moves, "; "); got != "production entered by ben; production left by cat; production entered by dan" {
		t.Errorf("stage moves: %s", got)
	}
	if !v.Stages[1].Rollback || v.Stages[1].Reason != "latency regression" {
		t.Errorf("the rollback: %+v", v.Stages[1])
	}
	if len(v.Signatures) != 1 || !v.Signatures[0].Valid || len(v.Evaluations) != 1 || len(v.Lineage) != 1 || len(v.Lineage[0].Predicate.Inputs) != 2 {
		t.Errorf("signatures %+v evaluations %+v lineage %+v", v.Signatures, v.Evaluations, v.Lineage)
	}
	md := e.ok("audit", repo, "--policy", "policy.yaml").Stdout
	if !strings.Contains(md, "| production | entered | ben | better recall | false |") || !strings.Contains(md, "## 1.0.0") {
		t.Errorf("markdown report:\n%s", md)
	}
	e.ok("audit", repo, "--format", "html", "-o", filepath.Join(e.dir, "audit.html"), "--policy", "policy.yaml")
	html := string(must(osReadFile(filepath.Join(e.dir, "audit.html"))))
	if !strings.Contains(html, "<td>latency regression</td>") || strings.Contains(html, "src=") || strings.Contains(html, "<link") {
		t.Errorf("html report is not self-contained or lacks the rollback")
	}
}
