package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// lifecycleServer runs modelreg serve with a configuration file.
func lifecycleServer(t *testing.T, configYAML string, args ...string) *registry {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "modelreg.yaml")
	writeFile(t, cfg, configYAML, 0o644)
	return startServer(t, append([]string{"--config", cfg}, args...)...)
}

// stored reports whether the registry's storage holds a blob's bytes.
func stored(reg *registry, d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(reg.Data, "docker", "registry", "v2", "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data"))
	return err == nil
}

// fileDigest is the digest of a file: its layer's, weights being stored raw.
func fileDigest(t *testing.T, path string) digest.Digest {
	t.Helper()
	return digest.FromBytes(must(os.ReadFile(path)))
}

// tombstoneOf reads the signed tombstone of a deleted version.
func tombstoneOf(t *testing.T, addr, repo, d string) promotion.Tombstone {
	t.Helper()
	var refs wire.Referrers
	apiGet(t, addr, "models/"+repo+"/referrers/"+d+"?kind=tombstone", &refs)
	if len(refs.Referrers) != 1 {
		t.Fatalf("%s@%s has %d tombstones", repo, d, len(refs.Referrers))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(getBody(t, "http://"+addr+"/v2/"+repo+"/manifests/"+refs.Referrers[0].Descriptor.Digest.String(), ocispec.MediaTypeImageManifest), &m); err != nil {
		t.Fatal(err)
	}
	var env struct {
		Payload []byte `json:"payload"`
	}
	if err := json.Unmarshal(getBody(t, "http://"+addr+"/v2/"+repo+"/blobs/"+m.Layers[0].Digest.String(), ""), &env); err != nil {
		t.Fatal(err)
	}
	var tomb promotion.Tombstone
	if err := json.Unmarshal(env.Payload, &tomb); err != nil {
		t.Fatal(err)
	}
	return tomb
}

func getBody(t *testing.T, url, accept string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}

// Retention on a real server: a dry run lists what the rules let go and
// changes nothing; the run deletes exactly that, each with a tombstone
// naming the rule, and collects their weights; versions in a stage, once
// in a stage, a lineage ancestor of a kept version, and repositories no
// rule matches are kept, and every kept version still pulls.
func TestRetentionDryRunThenRun(t *testing.T) {
	// A grace period of a millisecond: every blob here is old enough to
	// collect once nothing refers to it.
	reg := lifecycleServer(t, "retention:\n  grace: 1ms\n  rules:\n    - repositories: team/**\n      keepNewest: 2\n")
	e := newEnv(t)
	repo := reg.Addr + "/team/ret"
	weights := map[string]digest.Digest{}
	push := func(ref, name string, seed uint64, extra ...string) {
		dir := filepath.Join(e.dir, name)
		f := filepath.Join(dir, "model.safetensors")
		writeRandom(t, f, 256<<10, seed)
		weights[name] = fileDigest(t, f)
		e.ok(append([]string{"push", ref, dir}, extra...)...)
	}
	push(repo+":1.0.0", "v1", 1)
	e.ok("promote", repo+":1.0.0", "--to", "staging")
	push(repo+":2.0.0", "v2", 2)
	e.ok("promote", repo+":2.0.0", "--to", "staging") // 1.0.0 was in staging, 2.0.0 is
	push(repo+":3.0.0", "v3", 3)
	push(repo+":4.0.0", "v4", 4)
	push(repo+":5.0.0", "v5", 5)
	push(repo+":6.0.0", "v6", 6, "--base-model", repo+":3.0.0") // 3.0.0 is 6.0.0's ancestor
	push(reg.Addr+"/other/keep:1.0.0", "o1", 7)
	push(reg.Addr+"/other/keep:2.0.0", "o2", 8)
	push(reg.Addr+"/other/keep:3.0.0", "o3", 9)
	d4 := resolve(t, e, repo+":4.0.0")
	time.Sleep(5 * time.Millisecond) // past the grace period

	dry := decode[wire.GCReport](t, e.ok("gc", reg.Addr, "--dry-run", "--output", "json").Stdout)
	if !dry.DryRun || len(dry.Versions) != 1 || dry.Versions[0].Digest != d4 || !strings.Contains(dry.Versions[0].Reason, "retention: rule team/** keep newest 2") {
		t.Fatalf("dry run: %+v", dry)
	}
	if dry.Bytes < 256<<10 || !stored(reg, weights["v4"]) {
		t.Fatalf("dry run: %d bytes would go (want at least 4.0.0's weights, 256 KiB); weights still stored: %v", dry.Bytes, stored(reg, weights["v4"]))
	}
	text := e.ok("gc", reg.Addr, "--dry-run").Stdout
	for _, want := range []string{"would go", "team/ret:4.0.0", "would delete 1 version(s), kept 8", "would reclaim"} {
		if !strings.Contains(text, want) {
			t.Errorf("gc --dry-run says:\n%s\nwant it to say %q", text, want)
		}
	}
	e.ok("pull", repo+":4.0.0", "-o", filepath.Join(e.dir, "still"))

	run := decode[wire.GCReport](t, e.ok("gc", reg.Addr, "--output", "json").Stdout)
	if run.DryRun || len(run.Versions) != 1 || run.Versions[0].Digest != d4 || run.Versions[0].Error != "" || run.Bytes != dry.Bytes || run.Blobs != dry.Blobs {
		t.Fatalf("the run did not do what the dry run said:\ndry %+v\nrun %+v", dry, run)
	}
	t.Logf("retention deleted 4.0.0 and the collection reclaimed %d bytes in %d blobs (%d manifests read, %.3fs)", run.Bytes, run.Blobs, run.Manifests, run.Seconds)
	if stored(reg, weights["v4"]) {
		t.Error("4.0.0's weights are still stored after the run")
	}
	if !stored(reg, digest.Digest(d4)) {
		t.Error("4.0.0's manifest was collected; its tombstone refers to it")
	}
	tomb := tombstoneOf(t, reg.Addr, "team/ret", d4)
	if tomb.Reason != "retention: rule team/** keep newest 2" || tomb.Takedown || len(tomb.Tags) != 1 || tomb.Tags[0] != "4.0.0" || len(tomb.Manifest) == 0 {
		t.Errorf("tombstone: %+v", tomb)
	}
	e.fails([]string{"4.0.0"}, "pull", repo+":4.0.0", "-o", filepath.Join(e.dir, "gone"))
	for _, ref := range []string{repo + ":1.0.0", repo + ":2.0.0", repo + ":3.0.0", repo + ":5.0.0", repo + ":6.0.0", reg.Addr + "/other/keep:1.0.0"} {
		e.ok("pull", ref, "-o", filepath.Join(e.dir, "pulled-"+strings.NewReplacer("/", "_", ":", "_").Replace(ref)))
	}
	if again := decode[wire.GCReport](t, e.ok("gc", reg.Addr, "--output", "json").Stdout); len(again.Versions) != 0 || again.Blobs != 0 {
		t.Errorf("a second run: %+v; want nothing left", again)
	}
	e.fails([]string{"not modelreg serve", "garbage-collect"}, "gc", startPlainRegistry(t).Addr)
	e.fails([]string{"not a pattern"}, "gc", reg.Addr, "--repo", "team/[")
}

// A push in flight survives a collection: one blob committed but not yet
// named by a manifest, another still uploading (chunked, half sent).
// Then the push finishes, and the version pulls with every digest right.
func TestGCWhilePushInFlight(t *testing.T) {
	reg := lifecycleServer(t, "retention:\n  grace: 1h\n")
	e := newEnv(t)
	base := "http://" + reg.Addr + "/v2/team/inflight/"
	a := bytes.Repeat([]byte("committed blob, no manifest yet "), 4096)
	b := bytes.Repeat([]byte("blob still uploading "), 8192)
	da, db := digest.FromBytes(a), digest.FromBytes(b)

	// Blob a: committed (POST, then PUT with the bytes).
	putBlob(t, base, a)
	// Blob b: a chunked upload, half sent.
	loc := uploadLocation(t, http.MethodPost, base+"blobs/uploads/", nil, "")
	loc = uploadLocation(t, http.MethodPatch, loc, b[:len(b)/2], "0-"+itoa(len(b)/2-1))

	rep := decode[wire.GCReport](t, e.ok("gc", reg.Addr, "--output", "json").Stdout)
	if rep.YoungBlobs < 1 || !stored(reg, da) {
		t.Fatalf("the collection did not spare the blob whose manifest is on its way: %+v (stored: %v)", rep, stored(reg, da))
	}

	loc = uploadLocation(t, http.MethodPatch, loc, b[len(b)/2:], itoa(len(b)/2)+"-"+itoa(len(b)-1))
	if code, body := httpDo(t, http.MethodPut, withDigest(loc, db), nil, ""); code != http.StatusCreated {
		t.Fatalf("finishing b: %d %s", code, body)
	}
	cfg := ocispec.DescriptorEmptyJSON
	putBlob(t, base, cfg.Data)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.inflight",
		Config: ocispec.Descriptor{MediaType: cfg.MediaType, Digest: cfg.Digest, Size: cfg.Size},
		Layers: []ocispec.Descriptor{
			{MediaType: "application/octet-stream", Digest: da, Size: int64(len(a)), Annotations: map[string]string{ocispec.AnnotationTitle: "a.bin"}},
			{MediaType: "application/octet-stream", Digest: db, Size: int64(len(b)), Annotations: map[string]string{ocispec.AnnotationTitle: "b.bin"}},
		}})
	if code, body := httpDo(t, http.MethodPut, base+"manifests/1.0.0", m, ocispec.MediaTypeImageManifest); code != http.StatusCreated {
		t.Fatalf("the manifest: %d %s", code, body)
	}
	out := filepath.Join(e.dir, "pulled")
	e.oras("pull", reg.Addr+"/team/inflight:1.0.0", "-o", out) // oras verifies every digest
	if fileDigest(t, filepath.Join(out, "a.bin")) != da || fileDigest(t, filepath.Join(out, "b.bin")) != db {
		t.Error("the pushed files differ")
	}
	// Once named by a manifest, the blobs stay for good.
	decode[wire.GCReport](t, e.ok("gc", reg.Addr, "--output", "json").Stdout)
	if !stored(reg, da) || !stored(reg, db) {
		t.Error("a collection took blobs a manifest names")
	}
}

// putBlob uploads a blob in one PUT after the POST that opens the upload.
func putBlob(t *testing.T, base string, b []byte) {
	t.Helper()
	loc := uploadLocation(t, http.MethodPost, base+"blobs/uploads/", nil, "")
	if code, body := httpDo(t, http.MethodPut, withDigest(loc, digest.FromBytes(b)), b, "application/octet-stream"); code != http.StatusCreated {
		t.Fatalf("uploading a blob: %d %s", code, body)
	}
}

func withDigest(loc string, d digest.Digest) string {
	if strings.Contains(loc, "?") {
		return loc + "&digest=" + d.String()
	}
	return loc + "?digest=" + d.String()
}

func itoa(n int) string { return strconv.Itoa(n) }

// uploadLocation sends one request of a chunked upload and returns the
// next Location.
func uploadLocation(t *testing.T, method, url string, body []byte, contentRange string) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	if contentRange != "" {
		req.Header.Set("Content-Range", contentRange)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	loc := resp.Header.Get("Location")
	if strings.HasPrefix(loc, "/") {
		loc = "http://" + req.URL.Host + loc
	}
	return loc
}

// A deleted version's weights are reclaimed; blobs it shared with other
// versions (in its repository and in another) stay, its manifest stays
// beside its tombstone, and every other version still pulls and verifies.
func TestGCReclaimsDeletedWeights(t *testing.T) {
	reg := lifecycleServer(t, "retention:\n  grace: 1ms\n")
	e := newEnv(t)
	dir := func(name string, files map[string]uint64) string {
		d := filepath.Join(e.dir, name)
		for f, seed := range files {
			writeRandom(t, filepath.Join(d, f), 384<<10, seed)
		}
		return d
	}
	g1 := dir("g1", map[string]uint64{"shared.safetensors": 1, "unique.safetensors": 2, "cross.safetensors": 3})
	e.ok("push", reg.Addr+"/team/g:1.0.0", g1)
	e.ok("push", reg.Addr+"/team/g:2.0.0", dir("g2", map[string]uint64{"shared.safetensors": 1, "two.safetensors": 4}))
	e.ok("promote", reg.Addr+"/team/g:2.0.0", "--to", "staging")
	e.ok("push", reg.Addr+"/team/h:1.0.0", dir("h1", map[string]uint64{"cross.safetensors": 3}))
	unique, shared, cross := fileDigest(t, filepath.Join(g1, "unique.safetensors")), fileDigest(t, filepath.Join(g1, "shared.safetensors")), fileDigest(t, filepath.Join(g1, "cross.safetensors"))
	d1 := resolve(t, e, reg.Addr+"/team/g:1.0.0")
	e.ok("delete", reg.Addr+"/team/g:1.0.0", "--reason", "superseded")
	time.Sleep(5 * time.Millisecond) // past the grace period

	rep := decode[wire.GCReport](t, e.ok("gc", reg.Addr, "--output", "json").Stdout)
	t.Logf("reclaimed %d bytes in %d blobs after deleting one version of 3 files (one unique, 384 KiB)", rep.Bytes, rep.Blobs)
	if rep.Bytes < 384<<10 || len(rep.Versions) != 0 {
		t.Errorf("report: %+v", rep)
	}
	if stored(reg, unique) {
		t.Error("the deleted version's own weights are still stored")
	}
	if !stored(reg, shared) || !stored(reg, cross) || !stored(reg, digest.Digest(d1)) {
		t.Errorf("kept: shared %v, cross %v, deleted manifest %v; want all", stored(reg, shared), stored(reg, cross), stored(reg, digest.Digest(d1)))
	}
	if tomb := tombstoneOf(t, reg.Addr, "team/g", d1); tomb.Reason != "superseded" || digest.FromBytes(tomb.Manifest).String() != d1 {
		t.Errorf("tombstone after the collection: %+v", tomb)
	}
	for _, ref := range []string{"team/g:2.0.0", "team/g:staging", "team/h:1.0.0"} {
		e.ok("pull", reg.Addr+"/"+ref, "-o", filepath.Join(e.dir, "pulled-"+strings.NewReplacer("/", "_", ":", "_").Replace(ref)))
	}
	var hist wire.History
	apiGet(t, reg.Addr, "models/team/g/stages/staging/history", &hist)
	if len(hist.Records) != 1 {
		t.Errorf("staging history after the collection: %+v", hist)
	}
	// A rollback onto a deleted version is refused, by the client and by
	// the server's gate alike.
	e.ok("push", reg.Addr+"/team/g:3.0.0", dir("g3", map[string]uint64{"three.safetensors": 5}))
	e.ok("promote", reg.Addr+"/team/g:3.0.0", "--to", "staging")
	e.ok("promote", reg.Addr+"/team/g:2.0.0", "--to", "staging")
	d3 := resolve(t, e, reg.Addr+"/team/g:3.0.0")
	e.ok("delete", reg.Addr+"/team/g:3.0.0", "--reason", "bad")
	d3tomb := tombstoneOf(t, reg.Addr, "team/g", d3)
	e.fails([]string{"was deleted", "promote an existing version"}, "rollback", reg.Addr+"/team/g", "--stage", "staging")
	code, body := httpDo(t, http.MethodPut, "http://"+reg.Addr+"/v2/team/g/manifests/staging", d3tomb.Manifest, d3tomb.MediaType)
	wantDenied(t, "a deleted version's manifest put back into its stage", code, body, "was deleted from this registry", "cannot enter")
}

// Takedown: a version that was in a protected stage cannot be deleted,
// not even by an admin with a plain delete; a writer who is not an admin
// cannot take it down; an admin can: the tombstone (marked takedown)
// keeps the manifest, the weights are removed at once, the history still
// names the version, and a rollback onto it is refused.
func TestTakedown(t *testing.T) {
	htpasswd := htpasswdFile(t, "admin", "writer")
	e := newEnv(t)
	e.ok("keygen", "--output-key-prefix", "alice")
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), "version: 1\nkeys:\n  alice: alice.pub\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n", 0o644)
	reg := startServer(t, "--htpasswd", htpasswd, "--anonymous-read", "--admin-user", "admin", "--policy", filepath.Join(e.dir, "policy.yaml"))
	e.exec("admin-pw\n", nil, modelregBin, "login", reg.Addr, "-u", "admin", "--password-stdin")
	w := newEnv(t)
	w.exec("writer-pw\n", nil, modelregBin, "login", reg.Addr, "-u", "writer", "--password-stdin")
	repo := reg.Addr + "/team/td"
	src := filepath.Join(e.dir, "v1")
	writeRandom(t, filepath.Join(src, "model.safetensors"), 300<<10, 11)
	weights := fileDigest(t, filepath.Join(src, "model.safetensors"))
	e.ok("push", repo+":1.0.0", src)
	d1 := resolve(t, e, repo+":1.0.0")
	pushVersion(t, e, repo+":2.0.0", "two")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		e.ok("promote", repo+":"+v, "--to", "production", "--policy", "policy.yaml")
	}

	e.fails([]string{"protected stage", "production"}, "delete", repo+":1.0.0", "--reason", "gdpr")
	w.fails([]string{"not an admin", "--admin-user"}, "delete", repo+":1.0.0", "--takedown", "--reason", "gdpr")
	e.fails([]string{"needs --reason"}, "delete", repo+":1.0.0", "--takedown")
	e.fails([]string{"in stage production"}, "delete", repo+":2.0.0", "--takedown", "--reason", "gdpr")
	if !stored(reg, weights) {
		t.Fatal("a refused takedown removed the weights")
	}

	td := decode[wire.Takedown](t, e.ok("delete", repo+":1.0.0", "--takedown", "--reason", "GDPR erasure request 114", "--output", "json").Stdout)
	if td.Digest != d1 || td.Bytes < 300<<10 || td.Blobs < 1 {
		t.Errorf("takedown: %+v", td)
	}
	t.Logf("takedown removed %d bytes in %d blobs", td.Bytes, td.Blobs)
	if stored(reg, weights) {
		t.Error("the weights are still stored after the takedown")
	}
	tomb := tombstoneOf(t, reg.Addr, "team/td", d1)
	if !tomb.Takedown || tomb.Reason != "GDPR erasure request 114" || !strings.HasPrefix(tomb.Actor, "admin") || digest.FromBytes(tomb.Manifest).String() != d1 {
		t.Errorf("tombstone: %+v", tomb)
	}
	e.fails([]string{"1.0.0"}, "pull", repo+":1.0.0", "-o", filepath.Join(e.dir, "gone"))
	hist := e.ok("history", repo, "--stage", "production", "--output", "json").Stdout
	if !strings.Contains(hist, d1) {
		t.Errorf("the history forgot the version taken down:\n%s", hist)
	}
	e.fails([]string{"was deleted"}, "rollback", repo, "--stage", "production")
	e.ok("pull", repo+":production", "-o", filepath.Join(e.dir, "prod"))
}
