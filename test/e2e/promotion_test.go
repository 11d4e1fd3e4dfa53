package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/signature"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
)

// registries runs fn against modelreg serve (enforcing the policy the test
// wrote to policy.yaml) and against plain distribution, which has no
// Referrers API (everything goes through the tag schema). fn makes its keys
// and policy, then calls start.
func registries(t *testing.T, fn func(t *testing.T, start func(e *env) *registry)) {
	t.Run("modelreg-serve", func(t *testing.T) {
		fn(t, func(e *env) *registry { return startServer(t, "--policy", filepath.Join(e.dir, "policy.yaml")) })
	})
	t.Run("plain-distribution", func(t *testing.T) {
		fn(t, func(*env) *registry { return startPlainRegistry(t) })
	})
}

// signers makes the key pairs of a test: alice with modelreg keygen, bob
// with cosign v3, carol with cosign v2, and mallory (not in any policy).
func signers(t *testing.T, e *env) {
	t.Helper()
	e.ok("keygen", "--output-key-prefix", "alice")
	e.ok("keygen", "--output-key-prefix", "mallory")
	for _, k := range []struct{ bin, name string }{{cosign3Bin, "bob"}, {cosign2Bin, "carol"}} {
		if r := e.exec("", nil, k.bin, "generate-key-pair", "--output-key-prefix", k.name); r.Code != 0 {
			t.Fatalf("cosign generate-key-pair: %s", r.Stderr)
		}
	}
}

const policyYAML = `version: 1
keys:
  alice: alice.pub
  bob: bob.pub
  carol: carol.pub
stages:
  staging:
    signatures: {keys: [alice, bob, carol], threshold: 1}
  canary:
    signatures: {keys: [alice, bob, carol], threshold: 1}
  production:
    signatures:
      keys: [alice, bob, carol]
      threshold: 2
`

// pushVersion pushes a one-file model and returns its digest.
func pushVersion(t *testing.T, e *env, ref, content string) string {
	t.Helper()
	dir := filepath.Join(e.dir, "src-"+strings.NewReplacer("/", "_", ":", "_").Replace(ref))
	writeFile(t, filepath.Join(dir, "model.safetensors"), content, 0o644)
	return strings.TrimSpace(e.ok("push", ref, dir).Stdout)
}

func (e *env) cosign(bin string, env []string, args ...string) result {
	e.t.Helper()
	r := e.exec("", env, bin, args...)
	if r.Code != 0 {
		e.t.Fatalf("cosign %s: exit %d\n%s\n%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

type verifyOut struct {
	Signatures []signature.Found
	OK         bool
}

// Each form the real cosign CLIs write is found, attributed to its key, and
// accepted by modelreg promote: the v2 legacy .sig tag, the v2 OCI 1.1
// referrer and the v3 sigstore bundle.
func TestCosignSignaturesAccepted(t *testing.T) {
	registries(t, func(t *testing.T, start func(*env) *registry) {
		e := newEnv(t)
		signers(t, e)
		writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
		reg := start(e)
		repo := reg.Addr + "/team/cosigned"
		for _, c := range []struct {
			version string
			form    signature.Form
			sign    func(ref string)
		}{
			{"1.0.0", signature.FormLegacy, func(ref string) {
				e.cosign(cosign2Bin, nil, "sign", "--key", "carol.key", "--tlog-upload=false", "-y", ref)
			}},
			{"2.0.0", signature.FormReferrer, func(ref string) {
				e.cosign(cosign2Bin, []string{"COSIGN_EXPERIMENTAL=1"}, "sign", "--key", "carol.key", "--tlog-upload=false", "--registry-referrers-mode=oci-1-1", "-y", ref)
			}},
			{"3.0.0", signature.FormBundle, func(ref string) {
				e.cosign(cosign3Bin, nil, "sign", "--key", "bob.key", "--tlog-upload=false", "--use-signing-config=false", "-y", ref)
			}},
		} {
			t.Run(string(c.form), func(t *testing.T) {
				d := pushVersion(t, e, repo+":"+c.version, "weights "+c.version)
				c.sign(repo + "@" + d)
				v := decode[verifyOut](t, e.ok("verify", repo+":"+c.version, "--stage", "staging", "--policy", "policy.yaml", "--output", "json").Stdout)
				if len(v.Signatures) != 1 || v.Signatures[0].Form != c.form || !v.Signatures[0].Valid || !v.OK {
					t.Fatalf("verify: %+v", v)
				}
				e.ok("promote", repo+":"+c.version, "--to", "staging", "--policy", "policy.yaml")
				if got := resolve(t, e, repo+":staging"); got != d {
					t.Errorf("staging is %s, want %s", got, d)
				}
			})
		}
	})
}

// What modelreg sign writes, the real cosign verify accepts: v3 reads the
// bundle, v2 the legacy .sig tag; both reject another key.
func TestCosignVerifiesModelregSignatures(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	signers(t, e)
	repo := reg.Addr + "/team/signed"
	bundled := pushVersion(t, e, repo+":1.0.0", "bundle me")
	legacy := pushVersion(t, e, repo+":2.0.0", "legacy me")
	e.ok("sign", repo+":1.0.0", "--key", "alice.key")
	e.ok("sign", repo+":2.0.0", "--key", "alice.key", "--format", "legacy")

	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", repo+"@"+bundled)
	e.cosign(cosign2Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", repo+"@"+legacy)
	for _, c := range []struct{ bin, digest string }{{cosign3Bin, bundled}, {cosign2Bin, legacy}} {
		if r := e.exec("", nil, c.bin, "verify", "--key", "bob.pub", "--insecure-ignore-tlog=true", repo+"@"+c.digest); r.Code == 0 {
			t.Errorf("%s verify accepted alice's signature with bob's key", c.bin)
		}
	}
}

func resolve(t *testing.T, e *env, ref string) string {
	t.Helper()
	in := decode[catalog.Inspection](t, e.ok("inspect", ref, "--output", "json").Stdout)
	return in.Version.Descriptor.Digest.String()
}

// Sign, promote, promote another, promote again (no-op), history, --at,
// rollback, A/B stages, on both kinds of registry.
func TestPromotionLifecycle(t *testing.T) {
	registries(t, func(t *testing.T, start func(*env) *registry) {
		e := newEnv(t)
		signers(t, e)
		writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
		reg := start(e)
		repo := reg.Addr + "/team/fraud"
		v1 := pushVersion(t, e, repo+":1.0.0", "one")
		v2 := pushVersion(t, e, repo+":2.0.0", "two")
		for _, v := range []string{"1.0.0", "2.0.0"} {
			e.ok("sign", repo+":"+v, "--key", "alice.key")
			e.cosign(cosign3Bin, nil, "sign", "--key", "bob.key", "--tlog-upload=false", "--use-signing-config=false", "-y", repo+":"+v)
		}

		first := decode[promotion.Result](t, e.ok("promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml",
			"--reason", "first release", "--actor", "alice@ci", "--output", "json").Stdout)
		if first.Record == nil || first.Record.Previous != "" || first.Record.Digest != v1 || len(first.Record.Keys) != 2 || first.Record.Policy == "" {
			t.Fatalf("first record: %+v", first)
		}
		second := decode[promotion.Result](t, e.ok("promote", repo+":2.0.0", "--to", "production", "--policy", "policy.yaml",
			"--reason", "better recall", "--actor", "bob@ci", "--output", "json").Stdout)
		if second.Record.Previous != v1 || strings.Join(second.Record.Version, ",") != "2.0.0" {
			t.Fatalf("second record: %+v", second.Record)
		}
		again := decode[promotion.Result](t, e.ok("promote", repo+":2.0.0", "--to", "production", "--policy", "policy.yaml", "--output", "json").Stdout)
		if !again.Unchanged || again.Record != nil {
			t.Errorf("promoting the current version again: %+v", again)
		}

		hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "production", "--output", "json").Stdout)
		if len(hist) != 2 || hist[0].Digest != v2 || hist[0].Actor != "bob@ci" || hist[1].Digest != v1 || hist[1].Reason != "first release" {
			t.Fatalf("history: %+v", hist)
		}
		between := hist[1].Time.Add(hist[0].Time.Sub(hist[1].Time) / 2).Format(time.RFC3339Nano)
		at := decode[struct{ Record *promotion.Record }](t, e.ok("history", repo, "--stage", "production", "--at", between, "--output", "json").Stdout)
		if at.Record == nil || at.Record.Digest != v1 || at.Record.Actor != "alice@ci" {
			t.Errorf("--at %s: %+v", between, at.Record)
		}
		before := hist[1].Time.Add(-time.Hour).Format(time.RFC3339)
		if out := e.ok("history", repo, "--stage", "production", "--at", before).Stdout; !strings.Contains(out, "held no version") {
			t.Errorf("--at before the first promotion: %s", out)
		}

		rb := decode[promotion.Result](t, e.ok("rollback", repo, "--stage", "production", "--policy", "policy.yaml", "--reason", "2.0 regressed", "--output", "json").Stdout)
		if !rb.Record.Rollback || rb.Record.Digest != v1 || rb.Record.Previous != v2 {
			t.Errorf("rollback record: %+v", rb.Record)
		}
		if got := resolve(t, e, repo+":production"); got != v1 {
			t.Errorf("production after rollback is %s, want %s", got, v1)
		}
		text := e.ok("history", repo, "--stage", "production").Stdout
		if lines := strings.Split(strings.TrimSpace(text), "\n"); len(lines) != 4 || !strings.Contains(lines[1], "rollback") || !strings.Contains(lines[1], "2.0 regressed") {
			t.Errorf("history after rollback:\n%s", text)
		}

		// A rollback is checked against the policy in force now: a
		// stricter one (all three keys) refuses to bring 2.0.0 back.
		writeFile(t, filepath.Join(e.dir, "strict.yaml"), strings.Replace(policyYAML, "threshold: 2", "threshold: 3", 1), 0o644)
		e.ok("promote", repo+":2.0.0", "--to", "production", "--policy", "policy.yaml")
		e.fails([]string{"2 of 3 required signatures", "1 more needed from carol"}, "rollback", repo, "--stage", "production", "--policy", "strict.yaml")
		if got := resolve(t, e, repo+":production"); got != v2 {
			t.Errorf("a refused rollback moved production to %s", got)
		}

		// A/B: canary and production point at two versions at once.
		e.ok("promote", repo+":2.0.0", "--to", "canary", "--policy", "policy.yaml")
		l := decode[catalog.Listing](t, e.ok("list", repo, "--output", "json").Stdout)
		stages := map[string]string{}
		for _, v := range l.Versions {
			stages[v.Tag] = strings.Join(v.Stages, ",")
		}
		if stages["1.0.0"] != "" || stages["2.0.0"] != "canary,production" {
			t.Errorf("list stages: %v", stages)
		}
		e.ok("rollback", repo, "--stage", "production", "--policy", "policy.yaml")
		l = decode[catalog.Listing](t, e.ok("list", repo, "--output", "json").Stdout)
		for _, v := range l.Versions {
			stages[v.Tag] = strings.Join(v.Stages, ",")
		}
		if stages["1.0.0"] != "production" || stages["2.0.0"] != "canary" {
			t.Errorf("list stages after rollback: %v", stages)
		}
		in := decode[catalog.Inspection](t, e.ok("inspect", repo+":2.0.0", "--output", "json").Stdout)
		if strings.Join(in.Stages, ",") != "canary" {
			t.Errorf("inspect 2.0.0 stages: %v", in.Stages)
		}
		e.fails([]string{"no earlier version", "first to enter it"}, "rollback", repo, "--stage", "canary", "--policy", "policy.yaml")
		e.fails([]string{"points at no version"}, "rollback", repo, "--stage", "staging", "--policy", "policy.yaml")
	})
}

// Every refusal names what is missing and leaves the stage where it was.
func TestPromotionRefusals(t *testing.T) {
	registries(t, func(t *testing.T, start func(*env) *registry) {
		e := newEnv(t)
		signers(t, e)
		writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
		reg := start(e)
		repo := reg.Addr + "/team/guarded"
		good := pushVersion(t, e, repo+":1.0.0", "good")
		e.ok("sign", repo+":1.0.0", "--key", "alice.key", "--format", "legacy")
		e.ok("sign", repo+":1.0.0", "--key", "bob.key")
		e.ok("promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")
		untouched := func() {
			t.Helper()
			if got := resolve(t, e, repo+":production"); got != good {
				t.Fatalf("production moved to %s after a refusal", got)
			}
		}

		pushVersion(t, e, repo+":2.0.0", "unsigned")
		e.fails([]string{`may not enter "production"`, "0 of 2 required signatures", "no signature of any form"},
			"promote", repo+":2.0.0", "--to", "production", "--policy", "policy.yaml")
		untouched()

		pushVersion(t, e, repo+":3.0.0", "mallory's")
		mallory := strings.TrimSpace(e.ok("keygen", "--output-key-prefix", "mallory2").Stdout)
		e.ok("sign", repo+":3.0.0", "--key", "mallory2.key")
		e.fails([]string{"signed by key " + mallory, "not trusted"}, "promote", repo+":3.0.0", "--to", "production", "--policy", "policy.yaml")
		untouched()

		pushVersion(t, e, repo+":4.0.0", "half signed")
		e.ok("sign", repo+":4.0.0", "--key", "alice.key")
		e.fails([]string{"1 of 2 required signatures", "(signed by alice)", "1 more needed from bob, carol"},
			"promote", repo+":4.0.0", "--to", "production", "--policy", "policy.yaml")
		untouched()

		// A valid signature of 1.0.0 copied (with the real oras) onto 5.0.0's .sig tag.
		v5 := pushVersion(t, e, repo+":5.0.0", "borrowed signature")
		sigManifest := legacySigDigest(t, reg.Addr, "team/guarded", good)
		e.oras("tag", repo+"@"+sigManifest, "sha256-"+strings.TrimPrefix(v5, "sha256:")+".sig")
		e.ok("sign", repo+":5.0.0", "--key", "bob.key")
		e.fails([]string{"the signed payload is for " + good + ", not for this version"}, "promote", repo+":5.0.0", "--to", "production", "--policy", "policy.yaml")
		untouched()

		// Alice's bundle for 6.0.0 with its statement altered after signing.
		pushVersion(t, e, repo+":6.0.0", "tampered")
		e.ok("sign", repo+":6.0.0", "--key", "bob.key")
		tamperBundle(t, e, reg.Addr, "team/guarded", "6.0.0")
		e.fails([]string{"signature does not verify: the bundle was altered", "1 of 2"}, "promote", repo+":6.0.0", "--to", "production", "--policy", "policy.yaml")
		untouched()

		writeFile(t, filepath.Join(e.dir, "broken.yaml"), "version: 1\nkeys:\n  alice: alice.pub\nstages:\n  production:\n    signatures: {keys: [alice, dave], threshold: 1}\n", 0o644)
		e.fails([]string{"broken.yaml", "line 6", `names key "dave"`}, "promote", repo+":2.0.0", "--to", "production", "--policy", "broken.yaml")
		writeFile(t, filepath.Join(e.dir, "garbled.yaml"), "version: 1\nkeys:\n  alice: alice.pub\nstages:\n  production: [\n", 0o644)
		e.fails([]string{"garbled.yaml", "line 5"}, "promote", repo+":2.0.0", "--to", "production", "--policy", "garbled.yaml")
		writeFile(t, filepath.Join(e.dir, "typo.yaml"), "version: 1\nkeys:\n  alice: alice.pub\nstages:\n  production:\n    signatures: {keys: [alice], treshold: 1}\n", 0o644)
		e.fails([]string{"typo.yaml", "line 6", "treshold"}, "promote", repo+":2.0.0", "--to", "production", "--policy", "typo.yaml")
		untouched()

		// Without --policy, .modelreg/policy.yaml is the policy.
		writeFile(t, filepath.Join(e.dir, ".modelreg", "policy.yaml"),
			strings.NewReplacer(": alice.pub", ": ../alice.pub", ": bob.pub", ": ../bob.pub", ": carol.pub", ": ../carol.pub").Replace(policyYAML), 0o644)
		e.fails([]string{"0 of 2 required signatures"}, "promote", repo+":2.0.0", "--to", "production")
		untouched()

		// verify exits non-zero exactly when the stage's policy is not met.
		if r := e.modelreg("verify", repo+":4.0.0", "--stage", "production", "--policy", "policy.yaml"); r.Code == 0 {
			t.Errorf("verify of a half-signed version exited 0")
		}
		e.ok("verify", repo+":4.0.0", "--stage", "staging", "--policy", "policy.yaml")
	})
}

func repoClient(t *testing.T, addr, name string) *remote.Repository {
	t.Helper()
	repo, err := remote.NewRepository(addr + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	return repo
}

func legacySigDigest(t *testing.T, addr, name, subject string) string {
	t.Helper()
	repo := repoClient(t, addr, name)
	d, err := repo.Resolve(context.Background(), "sha256-"+strings.TrimPrefix(subject, "sha256:")+".sig")
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest.String()
}

// tamperBundle signs version with alice's key through modelreg, then
// replaces the bundle's statement with one naming an extra subject, keeping
// the signature: what an attacker editing a bundle would produce.
func tamperBundle(t *testing.T, e *env, addr, name, version string) {
	t.Helper()
	ctx := context.Background()
	repo := repoClient(t, addr, name)
	subject, err := repo.Resolve(ctx, version)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]bool{}
	repo.Referrers(ctx, subject, mediatypes.SigstoreBundle, func(rs []ocispec.Descriptor) error {
		for _, r := range rs {
			before[r.Digest.String()] = true
		}
		return nil
	})
	// The version only: a valid signature on its image view would approve it.
	e.ok("sign", addr+"/"+name+":"+version, "--key", "alice.key", "--no-image")
	var mine ocispec.Descriptor
	repo.Referrers(ctx, subject, mediatypes.SigstoreBundle, func(rs []ocispec.Descriptor) error {
		for _, r := range rs {
			if !before[r.Digest.String()] {
				mine = r
			}
		}
		return nil
	})
	raw, err := content.FetchAll(ctx, repo, mine)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	json.Unmarshal(raw, &m)
	blob, err := content.FetchAll(ctx, repo, m.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	json.Unmarshal(blob, &b)
	env := b["dsseEnvelope"].(map[string]any)
	st, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	st = []byte(strings.Replace(string(st), `"subject":[`, `"subject":[{"digest":{"sha256":"`+strings.Repeat("0", 64)+`"}},`, 1))
	env["payload"] = base64.StdEncoding.EncodeToString(st)
	altered, _ := json.Marshal(b)
	if err := repo.Delete(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if _, err := signature.PushReferrer(ctx, repo, subject, mediatypes.SigstoreBundle, mediatypes.SigstoreBundle, altered, m.Annotations); err != nil {
		t.Fatal(err)
	}
}

// examples/deploy-verify.sh, run as written with only cosign v3 and oras on
// the PATH, deploys a promoted model and refuses when too few approvers signed.
func TestDeployExample(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
	repo := reg.Addr + "/team/deployed"
	d := pushVersion(t, e, repo+":1.0.0", "ship it")
	e.ok("sign", repo+":1.0.0", "--key", "alice.key")
	e.cosign(cosign3Bin, nil, "sign", "--key", "bob.key", "--tlog-upload=false", "--use-signing-config=false", "-y", repo+"@"+d)
	e.ok("promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")

	script, _ := filepath.Abs(filepath.Join("..", "..", "examples", "deploy-verify.sh"))
	path := "PATH=" + filepath.Dir(cosign3Bin) + ":" + filepath.Dir(orasBin) + ":/usr/bin:/bin"
	env := []string{path, "REPO=" + repo, "KEYS=alice.pub bob.pub carol.pub", "ORAS_FLAGS=--plain-http"}
	// The same deploy with cosign v3 and with cosign v2 on the PATH: both
	// count alice's and bob's bundles.
	for _, cosign := range []string{cosign3Bin, cosign2Bin} {
		env := append([]string{"PATH=" + filepath.Dir(cosign) + ":" + filepath.Dir(orasBin) + ":/usr/bin:/bin"}, env[1:]...)
		out := filepath.Join(e.dir, "deployed-"+filepath.Base(filepath.Dir(cosign)))
		r := e.exec("", append(env, "THRESHOLD=2"), "/bin/sh", script, out)
		if r.Code != 0 || !strings.Contains(r.Stdout, "deployed "+repo+"@"+d) || !strings.Contains(r.Stdout, "signed by alice.pub") ||
			!strings.Contains(r.Stdout, "signed by bob.pub") || !strings.Contains(r.Stdout, "not signed by carol.pub") {
			t.Fatalf("deploy with %s: exit %d\n%s\n%s", cosign, r.Code, r.Stdout, r.Stderr)
		}
		if b, _ := os.ReadFile(filepath.Join(out, "model.safetensors")); string(b) != "ship it" {
			t.Errorf("deployed content with %s: %q", cosign, b)
		}
	}
	r := e.exec("", append(env, "THRESHOLD=3"), "/bin/sh", script, filepath.Join(e.dir, "refused"))
	if r.Code == 0 || !strings.Contains(r.Stderr, "only 2 of 3 required signatures") {
		t.Errorf("deploy with too few signatures: exit %d\n%s", r.Code, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "refused")); err == nil {
		t.Errorf("a refused deploy pulled files")
	}
}
