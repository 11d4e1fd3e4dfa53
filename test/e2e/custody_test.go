package e2e

// The chain-of-custody attacks: each test is one route an attacker with
// push rights tried around the gate, the immutability of versions or the
// stage history, with the client they used (the real oras, crane, cosign,
// or raw HTTP as curl sends it).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// upload puts a blob into repository name with a monolithic upload.
func upload(t *testing.T, addr, name string, content []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(content)
	resp, err := http.Post("http://"+addr+"/v2/"+name+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = "http://" + addr + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if code, body := httpDo(t, "PUT", loc+sep+"digest="+d.String(), content, "application/octet-stream"); code != http.StatusCreated {
		t.Fatalf("blob upload: %d %s", code, body)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(content))}
}

// rawModel builds an unsigned model manifest by hand: one weight layer, a
// config of configType, and the given top-level mediaType and artifactType
// ("" leaves the field out).
func rawModel(t *testing.T, addr, name, mediaType, configType, artifactType, weights string) []byte {
	t.Helper()
	layer := upload(t, addr, name, []byte(weights))
	layer.MediaType = mediatypes.Layer(mediatypes.LayerWeight, mediatypes.EncodingRaw)
	layer.Annotations = map[string]string{mediatypes.AnnotationTitle: "model.safetensors", mediatypes.AnnotationFilepath: "model.safetensors"}
	cfg := upload(t, addr, name, []byte("{}"))
	cfg.MediaType = configType
	m := map[string]any{"schemaVersion": 2, "config": cfg, "layers": []ocispec.Descriptor{layer}}
	if mediaType != "" {
		m["mediaType"] = mediaType
	}
	if artifactType != "" {
		m["artifactType"] = artifactType
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, addr, name, ref, contentType string, body []byte) (int, string) {
	t.Helper()
	return httpDo(t, "PUT", "http://"+addr+"/v2/"+name+"/manifests/"+ref, body, contentType)
}

func del(t *testing.T, addr, name, ref string) (int, string) {
	t.Helper()
	return httpDo(t, "DELETE", "http://"+addr+"/v2/"+name+"/manifests/"+ref, nil, "")
}

// exists reports whether ref resolves (HEAD) in the registry.
func exists(t *testing.T, addr, name, ref string) bool {
	t.Helper()
	req, _ := http.NewRequest("HEAD", "http://"+addr+"/v2/"+name+"/manifests/"+ref, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func wantDenied(t *testing.T, what string, code int, body string, fragments ...string) {
	t.Helper()
	if code != http.StatusForbidden || !strings.Contains(body, `"DENIED"`) {
		t.Errorf("%s: got %d %s, want 403 DENIED", what, code, body)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(body, f) {
			t.Errorf("%s: the refusal does not say %q: %s", what, f, body)
		}
	}
}

// Findings 1 to 5: an unsigned model reaches production through none of
// the five routes, and `modelreg pull …:production` finds nothing.
func TestGateHasNoSideDoor(t *testing.T) {
	e, reg := gated(t)
	name := "team/fraud"

	t.Run("legacy artifactType with oras push and oras tag", func(t *testing.T) {
		writeFile(t, filepath.Join(e.dir, "model.safetensors"), "unsigned weights", 0o644)
		e.oras("push", "--artifact-type", "application/vnd.cnai.model.unsigned", reg.Addr+"/"+name+":9.0.0", "model.safetensors")
		r := e.exec("", nil, orasBin, "tag", "--plain-http", reg.Addr+"/"+name+":9.0.0", "production")
		if r.Code == 0 || !strings.Contains(r.Stderr, "required signatures") {
			t.Errorf("oras tag of an unsigned legacy-type model to production: exit %d\n%s", r.Code, r.Stderr)
		}
	})
	t.Run("media type with parameters or in upper case, fields left out", func(t *testing.T) {
		body := rawModel(t, reg.Addr, name, "", mediatypes.ModelConfig, "", "unsigned weights 2")
		for _, ct := range []string{ocispec.MediaTypeImageManifest + "; charset=utf-8", strings.ToUpper(ocispec.MediaTypeImageManifest)} {
			code, resp := put(t, reg.Addr, name, "production", ct, body)
			wantDenied(t, "PUT as "+ct, code, resp, "required signatures")
		}
	})
	t.Run("Docker schema2 with the ModelPack config", func(t *testing.T) {
		const schema2 = "application/vnd.docker.distribution.manifest.v2+json"
		body := rawModel(t, reg.Addr, name, schema2, mediatypes.ModelConfig, "", "unsigned weights 3")
		code, resp := put(t, reg.Addr, name, "production", schema2, body)
		wantDenied(t, "schema2 model to production", code, resp, "required signatures")
	})
	t.Run("an image index wrapping the model", func(t *testing.T) {
		inner := rawModel(t, reg.Addr, name, ocispec.MediaTypeImageManifest, mediatypes.ModelConfig, mediatypes.ArtifactTypeModel, "unsigned weights 4")
		if code, resp := put(t, reg.Addr, name, digest.FromBytes(inner).String(), ocispec.MediaTypeImageManifest, inner); code != http.StatusCreated {
			t.Fatalf("storing the inner manifest by digest: %d %s", code, resp)
		}
		idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(inner), Size: int64(len(inner))}}})
		code, resp := put(t, reg.Addr, name, "production", ocispec.MediaTypeImageIndex, idx)
		wantDenied(t, "index to production", code, resp, "only a signed model version may enter it", "image index")
	})
	t.Run("an upper-case first name component", func(t *testing.T) {
		body := rawModel(t, reg.Addr, "Team/fraud", ocispec.MediaTypeImageManifest, mediatypes.ModelConfig, mediatypes.ArtifactTypeModel, "unsigned weights 5")
		code, resp := put(t, reg.Addr, "Team/fraud", "production", ocispec.MediaTypeImageManifest, body)
		wantDenied(t, "PUT /v2/Team/fraud/manifests/production", code, resp, "required signatures")
		if code, resp := put(t, reg.Addr, "Team/fraud", "1.0.0", ocispec.MediaTypeImageManifest, body); code != http.StatusCreated {
			t.Fatalf("version under Team/fraud: %d %s", code, resp)
		}
		other := rawModel(t, reg.Addr, "Team/fraud", ocispec.MediaTypeImageManifest, mediatypes.ModelConfig, mediatypes.ArtifactTypeModel, "other weights")
		code, resp = put(t, reg.Addr, "Team/fraud", "1.0.0", ocispec.MediaTypeImageManifest, other)
		wantDenied(t, "overwriting Team/fraud:1.0.0", code, resp, "immutable")
	})
	t.Run("a trailing slash or a path distribution would redirect", func(t *testing.T) {
		body := rawModel(t, reg.Addr, name, ocispec.MediaTypeImageManifest, mediatypes.ModelConfig, mediatypes.ArtifactTypeModel, "unsigned weights 6")
		if code, _ := put(t, reg.Addr, name, "production/", ocispec.MediaTypeImageManifest, body); code < 400 {
			t.Errorf("PUT …/manifests/production/: %d, want a refusal", code)
		}
	})
	for _, ref := range []string{name, "Team/fraud"} {
		if exists(t, reg.Addr, ref, "production") {
			t.Errorf("%s:production exists after every route was refused", ref)
		}
	}
	e.fails([]string{"production"}, "pull", reg.Addr+"/"+name+":production", "-o", filepath.Join(e.dir, "out"))
}

// Finding 6: a version tag never points at other content, whatever the
// content and the route: overwrite with oras or crane, delete and re-create.
func TestVersionsImmutableOnEveryRoute(t *testing.T) {
	e, reg := gated(t)
	// A plain artifact (not a model) under a version tag: immutable too.
	writeFile(t, filepath.Join(e.dir, "a.txt"), "a", 0o644)
	e.oras("push", reg.Addr+"/team/app:1.0", "a.txt")
	writeFile(t, filepath.Join(e.dir, "a.txt"), "b", 0o644)
	r := e.exec("", nil, orasBin, "push", "--plain-http", reg.Addr+"/team/app:1.0", "a.txt")
	if r.Code == 0 || !strings.Contains(r.Stderr, "immutable") {
		t.Errorf("oras push over app:1.0: exit %d\n%s", r.Code, r.Stderr)
	}
	// A moving non-version tag keeps plain OCI semantics.
	for _, c := range []string{"x", "y"} {
		writeFile(t, filepath.Join(e.dir, "l.txt"), c, 0o644)
		e.oras("push", reg.Addr+"/team/app:latest", "l.txt")
	}

	repo := reg.Addr + "/team/imm"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")
	pushVersion(t, e, repo+":2.0.0", "two")
	r = e.exec("", nil, craneBin, "tag", "--insecure", repo+":2.0.0", "1.0.0")
	if r.Code == 0 || !strings.Contains(r.Stderr, "immutable") {
		t.Errorf("crane tag 2.0.0 onto 1.0.0: exit %d\n%s", r.Code, r.Stderr)
	}
	// Delete and re-create: the delete is recorded, the tag never reused.
	if r := e.exec("", nil, orasBin, "manifest", "delete", "--plain-http", "--force", repo+":1.0.0"); r.Code != 0 {
		t.Fatalf("deleting 1.0.0 (never in a stage): %s", r.Stderr)
	}
	r = e.exec("", nil, modelregBin, "push", repo+":1.0.0", filepath.Join(e.dir, "src-"+strings.NewReplacer("/", "_", ":", "_").Replace(repo+":2.0.0")))
	if r.Code == 0 || !strings.Contains(r.Stderr, "never reused") {
		t.Errorf("re-creating deleted 1.0.0: exit %d\n%s", r.Code, r.Stderr)
	}
	refs := referrersOf(t, reg.Addr, "team/imm", v1, mediatypes.ArtifactTypeTombstone)
	if len(refs) != 1 {
		t.Fatalf("tombstones of the deleted version: %v", refs)
	}
	// The tombstone itself cannot be deleted.
	code, body := del(t, reg.Addr, "team/imm", refs[0].Digest.String())
	wantDenied(t, "deleting a tombstone", code, body, "append-only")
	// Nor can a version that was ever in a protected stage, even after
	// the stage moved on.
	e.ok("sign", repo+":2.0.0", "--key", "alice.key")
	e.ok("promote", repo+":2.0.0", "--to", "staging", "--policy", "policy.yaml")
	v3 := pushVersion(t, e, repo+":3.0.0", "three")
	e.ok("sign", repo+":3.0.0", "--key", "alice.key")
	e.ok("promote", repo+":3.0.0", "--to", "staging", "--policy", "policy.yaml")
	code, body = del(t, reg.Addr, "team/imm", "2.0.0")
	wantDenied(t, "deleting a version once in staging", code, body, "was in the protected stage")
	if !exists(t, reg.Addr, "team/imm", v3) {
		t.Error("3.0.0 is gone")
	}
	// Blobs cannot be deleted over the API (a record's layer, a version's weights).
	if code, _ := httpDo(t, "DELETE", "http://"+reg.Addr+"/v2/team/imm/blobs/"+digest.FromString("one").String(), nil, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("blob DELETE: %d, want 405", code)
	}
}

func referrersOf(t *testing.T, addr, name, subject, artifactType string) []ocispec.Descriptor {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v2/" + name + "/referrers/" + subject + "?artifactType=" + url.QueryEscape(artifactType))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx ocispec.Index
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		t.Fatal(err)
	}
	return idx.Manifests
}

// Finding 7: records cannot be deleted, a forged record is never history,
// deletions are recorded, and `history --verify` holds through all of it.
func TestHistoryAppendOnlyAndVerified(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
	proc := startServeAt(t, t.TempDir(), "127.0.0.1:0", "--policy", filepath.Join(e.dir, "policy.yaml"))
	reg := proc.reg
	repo := reg.Addr + "/team/hist"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")
	v2 := pushVersion(t, e, repo+":2.0.0", "two")
	unsigned := pushVersion(t, e, repo+":6.6.6", "unsigned")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		e.ok("sign", repo+":"+v, "--key", "bob.key")
	}
	e.ok("promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")
	e.ok("promote", repo+":2.0.0", "--to", "production", "--policy", "policy.yaml")
	e.ok("rollback", repo, "--stage", "production", "--policy", "policy.yaml")
	hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "production", "--output", "json").Stdout)
	if len(hist) != 3 || hist[0].Digest != v1 || !hist[0].Rollback || hist[1].Digest != v2 || hist[0].Seq != 3 || hist[0].PreviousRecord != hist[1].Record {
		t.Fatalf("history: %+v", hist)
	}

	// A record cannot be deleted.
	code, body := del(t, reg.Addr, "team/hist", hist[1].Record)
	wantDenied(t, "deleting a promotion record", code, body, "append-only")

	// A client-forged record: unsigned version, future time, alice.
	forged, _ := json.Marshal(promotion.Record{Repository: "team/hist", Stage: "production", Digest: unsigned, Previous: v1,
		Actor: "alice", Time: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Reason: "forged", Keys: []string{}, Seq: 4, PreviousRecord: hist[0].Record})
	writeFile(t, filepath.Join(e.dir, "record.json"), string(forged), 0o644)
	e.oras("attach", "--artifact-type", mediatypes.ArtifactTypePromotion, repo+"@"+unsigned, "record.json:"+mediatypes.ArtifactTypePromotion)
	after := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "production", "--output", "json").Stdout)
	if len(after) != 3 {
		t.Errorf("a forged record entered the history: %+v", after)
	}
	at := e.ok("history", repo, "--stage", "production", "--at", "2031-01-01T00:00:00Z").Stdout
	if strings.Contains(at, unsigned) || !strings.Contains(at, v1) {
		t.Errorf("history --at 2031 after a forged record: %s", at)
	}
	e.ok("history", repo, "--stage", "production", "--verify")

	// An unprotected stage: deleting its tag is recorded as the stage
	// emptied; deleting a version once in it keeps its records.
	e.ok("promote", repo+":6.6.6", "--to", "demo")
	e.ok("promote", repo+":2.0.0", "--to", "demo")
	if r := e.exec("", nil, orasBin, "manifest", "delete", "--plain-http", "--force", repo+":6.6.6"); r.Code != 0 {
		t.Fatalf("deleting 6.6.6, once in an unprotected stage: %s", r.Stderr)
	}
	// oras deletes by digest (refused: 2.0.0 is in demo); curl deletes the tag.
	if r := e.exec("", nil, orasBin, "manifest", "delete", "--plain-http", "--force", repo+":demo"); r.Code == 0 || !strings.Contains(r.Stderr, "is in stage demo") {
		t.Errorf("oras manifest delete of the version in demo: exit %d\n%s", r.Code, r.Stderr)
	}
	if code, body := del(t, reg.Addr, "team/hist", "demo"); code != http.StatusAccepted {
		t.Fatalf("DELETE of the demo tag: %d %s", code, body)
	}
	demo := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "demo", "--output", "json").Stdout)
	if len(demo) != 3 || demo[0].Kind != promotion.KindRemoval || demo[2].Digest != unsigned {
		t.Errorf("demo history after deletes: %+v", demo)
	}
	now := time.Now().UTC().Add(time.Minute).Format(time.RFC3339)
	if out := e.ok("history", repo, "--stage", "demo", "--at", now).Stdout; !strings.Contains(out, "held no version") {
		t.Errorf("history --at now of an emptied stage: %s", out)
	}
	e.ok("history", repo, "--stage", "demo", "--verify")

	// Tampering shows: a record removed from storage while the server was
	// down breaks --verify.
	proc.stop()
	rec := hist[1].Record
	hexd := strings.TrimPrefix(rec, "sha256:")
	link := filepath.Join(reg.Data, "docker/registry/v2/repositories/team/hist/_manifests/revisions/sha256", hexd)
	if err := os.RemoveAll(link); err != nil {
		t.Fatal(err)
	}
	startServeAt(t, reg.Data, reg.Addr, "--policy", filepath.Join(e.dir, "policy.yaml"))
	r := e.modelreg("history", repo, "--stage", "production", "--verify")
	if r.Code == 0 || !strings.Contains(r.Stderr, "does not verify") || !strings.Contains(r.Stderr, rec) {
		t.Errorf("--verify with a record gone from storage: exit %d\n%s", r.Code, r.Stderr)
	}
}

// Finding 8: metrics must be finite numbers, on the client and the server.
func TestNonFiniteMetricsRefused(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	writeFile(t, filepath.Join(e.dir, "m", "model.safetensors"), "w", 0o644)
	for _, v := range []string{"NaN", "Inf", "-Inf"} {
		e.fails([]string{"finite"}, "push", reg.Addr+"/team/nan:1.0.0", filepath.Join(e.dir, "m"), "--metric", "acc="+v)
		r := e.exec("", nil, orasBin, "push", "--plain-http", "--artifact-type", mediatypes.ArtifactTypeModel,
			"--annotation", mediatypes.AnnotationMetricPrefix+"acc="+v, reg.Addr+"/team/nan:1.0."+fmt.Sprint(len(v)), "m/model.safetensors")
		if r.Code == 0 || !strings.Contains(r.Stderr, "finite") {
			t.Errorf("oras push with metric %s: exit %d\n%s", v, r.Code, r.Stderr)
		}
	}
	e.ok("push", reg.Addr+"/team/nan:1.0.0", filepath.Join(e.dir, "m"), "--metric", "acc=0.5")
	var out struct{ Versions []json.RawMessage }
	apiGet(t, reg.Addr, "models/team/nan/versions", &out)
	if len(out.Versions) != 1 {
		t.Errorf("versions: %d", len(out.Versions))
	}
}

// Finding 13: the trust policy in the data directory is used without a
// flag, and `oras tag` is refused by the server.
func TestDefaultPolicyInDataDir(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	data := t.TempDir()
	pol := absolutePolicy(e)
	writeFile(t, filepath.Join(data, "modelreg", "policy.yaml"), pol, 0o644)
	reg := startServeAt(t, data, "127.0.0.1:0").reg
	repo := reg.Addr + "/team/default"
	pushVersion(t, e, repo+":1.0.0", "one")
	r := e.exec("", nil, orasBin, "tag", "--plain-http", repo+":1.0.0", "production")
	if r.Code == 0 || !strings.Contains(r.Stderr, "required signatures") {
		t.Errorf("oras tag to production with the policy in the data directory: exit %d\n%s", r.Code, r.Stderr)
	}
	var st struct {
		ProtectedStages []string `json:"protectedStages"`
		ServerKey       string   `json:"serverKey"`
	}
	apiGet(t, reg.Addr, "status", &st)
	if strings.Join(st.ProtectedStages, ",") != "canary,production,staging" || !strings.Contains(st.ServerKey, "PUBLIC KEY") {
		t.Errorf("status: %+v", st)
	}
}

// The policy is re-read when its file changes; a broken file keeps the old
// one in force and says so on the status endpoint.
func TestPolicyReloaded(t *testing.T) {
	e, reg := gated(t)
	repo := reg.Addr + "/team/reload"
	pushVersion(t, e, repo+":1.0.0", "one")
	// demo is not protected: an unsigned model may enter it.
	e.ok("promote", repo+":1.0.0", "--to", "demo")
	path := filepath.Join(e.dir, "policy.yaml")
	writeFile(t, path, policyYAML+"  demo:\n    signatures: {keys: [alice], threshold: 1}\n", 0o644)
	pushVersion(t, e, repo+":2.0.0", "two")
	waitProtected(t, reg.Addr, "canary,demo,production,staging")
	code, body := put(t, reg.Addr, "team/reload", "demo", ocispec.MediaTypeImageManifest, fetchManifest(t, "http://"+reg.Addr+"/v2/team/reload/manifests/2.0.0"))
	wantDenied(t, "demo after the policy file protected it", code, body, "required signatures")
	writeFile(t, path, "version: 1\nstages: [broken\n", 0o644)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			Policy          json.RawMessage `json:"policy"`
			ProtectedStages []string        `json:"protectedStages"`
		}
		apiGet(t, reg.Addr, "status", &st)
		if bytes.Contains(bytes.ToLower(st.Policy), []byte("error")) && strings.Contains(strings.Join(st.ProtectedStages, ","), "demo") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a broken policy file is not reported, or the old policy was dropped: %s %v", st.Policy, st.ProtectedStages)
		}
		time.Sleep(500 * time.Millisecond)
	}
	code, body = put(t, reg.Addr, "team/reload", "demo", ocispec.MediaTypeImageManifest, fetchManifest(t, "http://"+reg.Addr+"/v2/team/reload/manifests/2.0.0"))
	wantDenied(t, "demo under the old policy kept in force", code, body)
}

// Finding 9, promotions: `kill -9` of the server at random points of a
// promotion loop never leaves a record without its tag move or the other
// way round: after each restart the newest record names what the tag
// holds, `history --verify` passes, and what the API serves equals a
// rebuild from storage.
func TestKillDuringPromotions(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
	data := t.TempDir()
	p := startServeAt(t, data, "127.0.0.1:0", "--policy", filepath.Join(e.dir, "policy.yaml"))
	addr := p.reg.Addr
	repo := addr + "/team/crash"
	var bodies [][]byte
	for _, v := range []string{"1.0.0", "2.0.0"} {
		d := pushVersion(t, e, repo+":"+v, "content "+v)
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		e.ok("sign", repo+":"+v, "--key", "bob.key")
		bodies = append(bodies, fetchManifest(t, "http://"+addr+"/v2/team/crash/manifests/"+d))
	}
	check := func(round int) {
		t.Helper()
		hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "production", "--output", "json").Stdout)
		holds := ""
		if exists(t, addr, "team/crash", "production") {
			holds = resolve(t, e, repo+":production")
		}
		if len(hist) > 0 && hist[0].Digest != holds || len(hist) == 0 && holds != "" {
			newest := "(none)"
			if len(hist) > 0 {
				newest = fmt.Sprintf("%s (record %s, seq %d)", hist[0].Digest, hist[0].Record, hist[0].Seq)
			}
			t.Fatalf("round %d: the newest record names %s, the tag holds %q", round, newest, holds)
		}
		if r := e.modelreg("history", repo, "--stage", "production", "--verify"); r.Code != 0 {
			t.Fatalf("round %d: history --verify: %s", round, r.Stderr)
		}
	}
	moves := 0
	for round := range 8 {
		stop := promoteLoop("http://"+addr+"/v2/team/crash/manifests/production", bodies)
		time.Sleep(time.Duration(150+round*70) * time.Millisecond)
		p.kill()
		moves += stop()
		p = startServeAt(t, data, addr, "--policy", filepath.Join(e.dir, "policy.yaml"))
		check(round)
	}
	if moves < 8 {
		t.Fatalf("only %d moves were made across the rounds: the loop did not run", moves)
	}
	t.Logf("%d stage moves across 8 kill -9 rounds", moves)
	before := apiSnapshot(t, addr)
	p.stop()
	p = startServeAt(t, data, addr, "--policy", filepath.Join(e.dir, "policy.yaml"), "--reindex")
	if after := apiSnapshot(t, addr); after != before {
		t.Errorf("the API after kill -9 rounds differs from a rebuild from storage:\nlive:    %s\nrebuilt: %s", before, after)
	}
}

// promoteLoop PUTs the manifests in bodies, in turn, to a stage URL, as
// fast as the server answers, until the returned stop, which says how many
// moves the server took (201): promotions in flight when a test kills the
// server.
func promoteLoop(url string, bodies [][]byte) (stop func() int) {
	quit := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for i := 0; ; i++ {
			select {
			case <-quit:
				done <- n
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(bodies[i%2]))
			req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated {
				n++
			}
		}
	}()
	return func() int { close(quit); return <-done }
}

// apiSnapshot is what the model API and the Referrers API serve about
// team/crash, as one string.
func apiSnapshot(t *testing.T, addr string) string {
	t.Helper()
	var out []string
	var versions struct {
		Versions []struct{ Digest string }
	}
	apiGet(t, addr, "models/team/crash/versions", &versions)
	for _, p := range []string{"models/team/crash/stages/production/history", "models/team/crash/versions"} {
		var v any
		apiGet(t, addr, p, &v)
		b, _ := json.Marshal(v)
		out = append(out, string(b))
	}
	for _, v := range versions.Versions {
		b, _ := json.Marshal(referrersOf(t, addr, "team/crash", v.Digest, ""))
		out = append(out, string(b))
	}
	return strings.Join(out, "\n")
}

// Finding 9, rebuild: `kill -9` during an index rebuild leaves an index the
// next start rebuilds again instead of trusting half of it.
func TestKillDuringRebuild(t *testing.T) {
	data := t.TempDir()
	p := startServeAt(t, data, "127.0.0.1:0")
	addr := p.reg.Addr
	const repos = 150
	for i := range repos {
		name := fmt.Sprintf("team/m%03d", i)
		body := rawModel(t, addr, name, ocispec.MediaTypeImageManifest, mediatypes.ModelConfig, mediatypes.ArtifactTypeModel, "weights "+name)
		if code, resp := put(t, addr, name, "1.0.0", ocispec.MediaTypeImageManifest, body); code != http.StatusCreated {
			t.Fatalf("%s: %d %s", name, code, resp)
		}
	}
	p.stop()
	// Kill the server the moment it says the rebuild began (a real SIGKILL,
	// while it works through 150 repositories); a rebuild that already
	// finished proves nothing, so try again.
	killedMidway := false
	for attempt := 0; attempt < 5 && !killedMidway; attempt++ {
		// The index is lost (a new disk, an upgrade): the start rebuilds it
		// from nothing, which is where a cut-short rebuild used to look complete.
		idxFiles, _ := filepath.Glob(filepath.Join(data, "modelreg", "index.db*"))
		for _, f := range idxFiles {
			os.Remove(f)
		}
		cmd := exec.Command(modelregBin, "serve", "--addr", addr, "--data", data, "--log-format", "json")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var logs strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "rebuilding the index from storage") {
				cmd.Process.Kill()
				break
			}
		}
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
		}
		cmd.Wait()
		killedMidway = strings.Contains(logs.String(), "rebuilding the index from storage") && !strings.Contains(logs.String(), "index rebuilt")
	}
	if !killedMidway {
		t.Fatal("no kill landed during the rebuild: the test proved nothing")
	}
	p = startServeAt(t, data, addr)
	var models struct{ Models []json.RawMessage }
	apiGet(t, addr, "models?n=1000", &models)
	if len(models.Models) != repos {
		t.Errorf("after a rebuild cut short by kill -9 the model API lists %d of %d models", len(models.Models), repos)
	}
	last := fmt.Sprintf("team/m%03d", repos-1)
	other := rawModel(t, addr, last, ocispec.MediaTypeImageManifest, mediatypes.ModelConfig, mediatypes.ArtifactTypeModel, "other weights")
	code, body := put(t, addr, last, "1.0.0", ocispec.MediaTypeImageManifest, other)
	wantDenied(t, "overwriting "+last+":1.0.0 after the interrupted rebuild", code, body, "immutable")
}

// Client errors the review found answered with 500: each is a 4xx.
func TestClientErrorsAre4xx(t *testing.T) {
	reg := startServer(t)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	long := strings.Repeat("a", 300)
	deep := strings.Repeat(strings.Repeat("b", 60)+"/", 7) + "c"
	for _, c := range []struct {
		what, method, path, contentType string
		body                            []byte
	}{
		{"a 300-character name", "PUT", "/v2/" + long + "/manifests/1.0.0", ocispec.MediaTypeImageManifest, manifest},
		{"a name over 255 characters in components", "PUT", "/v2/" + deep + "/manifests/production", ocispec.MediaTypeImageManifest, manifest},
		{"a long name, delete", "DELETE", "/v2/" + long + "/manifests/1.0.0", "", nil},
		{"a long name, referrers", "GET", "/v2/" + long + "/referrers/" + digest.FromString("x").String(), "", nil},
		{"schema 1", "PUT", "/v2/team/x/manifests/1.0.1", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1,"name":"team/x","tag":"1.0.1","fsLayers":[],"history":[]}`)},
		{"a malformed digest reference", "PUT", "/v2/team/x/manifests/sha256:zz", ocispec.MediaTypeImageManifest, manifest},
		{"a malformed digest delete", "DELETE", "/v2/team/x/manifests/sha256:zz", "", nil},
		{"a malformed referrers subject", "GET", "/v2/team/x/referrers/sha256:zz", "", nil},
		{"a malformed subject", "PUT", "/v2/team/x/manifests/1.0.2", ocispec.MediaTypeImageManifest, bytes.Replace(manifest, []byte(`"layers":[]`), []byte(`"layers":[],"subject":{"mediaType":"a","digest":"sha256:zz","size":1}`), 1)},
		{"a body that contradicts its Content-Type", "PUT", "/v2/team/x/manifests/1.0.3", ocispec.MediaTypeImageIndex, manifest},
		{"tags on a push by digest (not gated, so refused)", "PUT", "/v2/team/x/manifests/" + digest.FromBytes(manifest).String() + "?tag=production", ocispec.MediaTypeImageManifest, manifest},
	} {
		code, body := httpDo(t, c.method, "http://"+reg.Addr+c.path, c.body, c.contentType)
		if code < 400 || code >= 500 {
			t.Errorf("%s: %d %s, want a 4xx", c.what, code, body)
		}
	}
}

// A manifest the index cannot take (written to storage behind the
// server's back: here by plain distribution on the same data directory)
// never stops a rebuild: it is reported, and the rest is served.
func TestRebuildSurvivesBadManifest(t *testing.T) {
	plain := startPlainRegistry(t)
	e := newEnv(t)
	writeFile(t, filepath.Join(e.dir, "model.safetensors"), "w", 0o644)
	for i, v := range []string{"NaN", "Inf"} {
		e.oras("push", "--artifact-type", mediatypes.ArtifactTypeModel, "--annotation", mediatypes.AnnotationMetricPrefix+"acc="+v,
			fmt.Sprintf("%s/team/bad:1.0.%d", plain.Addr, i), "model.safetensors")
	}
	e.oras("push", "--artifact-type", mediatypes.ArtifactTypeModel, "--annotation", mediatypes.AnnotationMetricPrefix+"acc=0.9", plain.Addr+"/team/good:1.0.0", "model.safetensors")
	p := startServeAt(t, plain.Data, "127.0.0.1:0", "--reindex")
	var st struct {
		IndexFailures []string `json:"indexFailures"`
	}
	apiGet(t, p.reg.Addr, "status", &st)
	if len(st.IndexFailures) != 2 || !strings.Contains(strings.Join(st.IndexFailures, "\n"), "finite") {
		t.Errorf("index failures on the status endpoint: %v", st.IndexFailures)
	}
	var models struct{ Models []json.RawMessage }
	apiGet(t, p.reg.Addr, "models", &models)
	if len(models.Models) != 1 {
		t.Errorf("models served: %s", models.Models)
	}
	var search any
	apiGet(t, p.reg.Addr, "search?q="+url.QueryEscape("metrics.acc > 0"), &search)
	// The versions stay immutable although they are not indexed as models.
	writeFile(t, filepath.Join(e.dir, "model.safetensors"), "other", 0o644)
	r := e.exec("", nil, orasBin, "push", "--plain-http", "--artifact-type", mediatypes.ArtifactTypeModel, p.reg.Addr+"/team/bad:1.0.0", "model.safetensors")
	if r.Code == 0 || !strings.Contains(r.Stderr, "immutable") {
		t.Errorf("overwriting an unindexable version: exit %d\n%s", r.Code, r.Stderr)
	}
}

// A delete by digest racing a promotion of the same version: the delete's
// check ("no stage points at it") and the move cannot interleave, so a
// protected stage is never emptied behind the history's back.
func TestDeleteRacingPromotion(t *testing.T) {
	e, reg := gated(t)
	repo := reg.Addr + "/team/race"
	for i := range 12 {
		v := fmt.Sprintf("1.0.%d", i)
		d := pushVersion(t, e, repo+":"+v, "content "+v)
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		body := fetchManifest(t, "http://"+reg.Addr+"/v2/team/race/manifests/"+d)
		done := make(chan int, 2)
		go func() {
			code, _ := put(t, reg.Addr, "team/race", "staging", ocispec.MediaTypeImageManifest, body)
			done <- code
		}()
		go func() { code, _ := del(t, reg.Addr, "team/race", d); done <- code }()
		<-done
		<-done
		hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "staging", "--output", "json").Stdout)
		holds := ""
		if exists(t, reg.Addr, "team/race", "staging") {
			holds = resolve(t, e, repo+":staging")
		}
		if len(hist) > 0 && hist[0].Digest != holds {
			t.Fatalf("round %d: staging holds %q, its newest record says %s", i, holds, hist[0].Digest)
		}
	}
	if r := e.modelreg("history", repo, "--stage", "staging", "--verify"); r.Code != 0 {
		t.Fatalf("history --verify: %s", r.Stderr)
	}
}

// A record a client pushes never picks where a rollback goes: against
// modelreg serve, rollback reads the server's signed history.
func TestRollbackIgnoresForgedRecords(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	repo := reg.Addr + "/team/rb"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")
	v2 := pushVersion(t, e, repo+":2.0.0", "two")
	evil := pushVersion(t, e, repo+":6.6.6", "evil")
	e.ok("promote", repo+":1.0.0", "--to", "demo")
	e.ok("promote", repo+":2.0.0", "--to", "demo")
	forged, _ := json.Marshal(promotion.Record{Repository: "team/rb", Stage: "demo", Digest: v2, Previous: evil,
		Actor: "alice", Time: time.Now().UTC().Add(time.Hour), Reason: "forged", Keys: []string{}})
	writeFile(t, filepath.Join(e.dir, "record.json"), string(forged), 0o644)
	e.oras("attach", "--artifact-type", mediatypes.ArtifactTypePromotion, repo+"@"+v2, "record.json:"+mediatypes.ArtifactTypePromotion)
	e.ok("rollback", repo, "--stage", "demo")
	if got := resolve(t, e, repo+":demo"); got != v1 {
		t.Errorf("rollback went to %s, want %s (the forged record names %s)", got, v1, evil)
	}
}

// A policy written into the data directory while the server runs is
// taken within seconds: the README walkthrough's order.
func TestDefaultPolicyCreatedLater(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	data := t.TempDir()
	reg := startServeAt(t, data, "127.0.0.1:0").reg
	repo := reg.Addr + "/team/later"
	pushVersion(t, e, repo+":1.0.0", "one")
	pol := absolutePolicy(e)
	writeFile(t, filepath.Join(data, "modelreg", "policy.yaml"), pol, 0o644)
	waitProtected(t, reg.Addr, "canary,production,staging")
	r := e.exec("", nil, orasBin, "tag", "--plain-http", repo+":1.0.0", "production")
	if r.Code == 0 || !strings.Contains(r.Stderr, "required signatures") {
		t.Errorf("oras tag to production after the policy appeared: exit %d\n%s", r.Code, r.Stderr)
	}
}

// Genesis: a registry whose stage history was written before the chain
// (here: records written by modelreg promote on plain distribution, then
// the same storage served by modelreg serve) gets one signed anchor per
// stage, so `history --verify` passes; records pushed after the upgrade are
// never adopted, even across restarts.
func TestUpgradeAnchorsOlderHistory(t *testing.T) {
	plain := startPlainRegistry(t)
	e := newEnv(t)
	repo := plain.Addr + "/team/old"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")
	v2 := pushVersion(t, e, repo+":2.0.0", "two")
	e.ok("promote", repo+":1.0.0", "--to", "demo")
	e.ok("promote", repo+":2.0.0", "--to", "demo")

	p := startServeAt(t, plain.Data, "127.0.0.1:0")
	repo = p.reg.Addr + "/team/old"
	hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "demo", "--output", "json").Stdout)
	if len(hist) != 3 || hist[0].Kind != promotion.KindAnchor || len(hist[0].Anchors) != 2 || hist[1].Digest != v2 || hist[2].Digest != v1 {
		t.Fatalf("history after the upgrade: %+v", hist)
	}
	e.ok("history", repo, "--stage", "demo", "--verify")

	// After the upgrade, a client-written record for a stage without a
	// chain is kept but never history, even after a restart.
	forged, _ := json.Marshal(promotion.Record{Repository: "team/old", Stage: "staging", Digest: v1, Actor: "mallory", Time: time.Now().UTC(), Keys: []string{}})
	writeFile(t, filepath.Join(e.dir, "record.json"), string(forged), 0o644)
	e.oras("attach", "--artifact-type", mediatypes.ArtifactTypePromotion, repo+"@"+v1, "record.json:"+mediatypes.ArtifactTypePromotion)
	p.stop()
	p = startServeAt(t, plain.Data, p.reg.Addr, "--reindex") // a rebuild tells the same history
	if again := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "demo", "--output", "json").Stdout); len(again) != 3 {
		t.Errorf("history after a rebuild: %+v", again)
	}
	if out := e.ok("history", repo, "--stage", "staging", "--output", "json").Stdout; strings.TrimSpace(out) != "[]" {
		t.Errorf("a record pushed after the upgrade became history: %s", out)
	}
	// The next move continues the anchored chain.
	e.ok("promote", repo+":1.0.0", "--to", "demo")
	e.ok("history", repo, "--stage", "demo", "--verify")
}

// A signed record copied into another repository (where the same version
// exists) is not that repository's history.
func TestRecordCopiedToAnotherRepository(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	a, b := reg.Addr+"/team/a", reg.Addr+"/team/b"
	pushVersion(t, e, a+":1.0.0", "same")
	pushVersion(t, e, b+":1.0.0", "same")
	e.ok("promote", a+":1.0.0", "--to", "demo")
	hist := decode[[]promotion.Record](t, e.ok("history", a, "--stage", "demo", "--output", "json").Stdout)
	if len(hist) != 1 {
		t.Fatalf("history of a: %+v", hist)
	}
	if r := e.exec("", nil, orasBin, "cp", "--from-plain-http", "--to-plain-http", a+"@"+hist[0].Record, b+"@"+hist[0].Record); r.Code != 0 {
		t.Fatalf("oras cp of the record: %s", r.Stderr)
	}
	if out := e.ok("history", b, "--stage", "demo", "--output", "json").Stdout; strings.TrimSpace(out) != "[]" {
		t.Errorf("a record copied from team/a became team/b's history: %s", out)
	}
	e.ok("promote", b+":1.0.0", "--to", "demo")
	e.ok("history", b, "--stage", "demo", "--verify")
}

// absolutePolicy is policyYAML with the key files of e named by absolute
// path, for a policy file that lives in a server's data directory.
func absolutePolicy(e *env) string {
	pol := policyYAML
	for _, k := range []string{"alice", "bob", "carol"} {
		pol = strings.ReplaceAll(pol, ": "+k+".pub", ": "+filepath.Join(e.dir, k+".pub"))
	}
	return pol
}

// waitProtected waits (20 s at most) until the server's status endpoint
// lists exactly the protected stages want (comma-separated, sorted).
func waitProtected(t *testing.T, addr, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			ProtectedStages []string `json:"protectedStages"`
		}
		apiGet(t, addr, "status", &st)
		if strings.Join(st.ProtectedStages, ",") == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("protected stages %v 20 s after the policy file changed, want %s", st.ProtectedStages, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
