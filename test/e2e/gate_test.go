package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelreg/modelreg/pkg/promotion"
)

// gated starts modelreg serve enforcing policyYAML, with alice, bob and
// carol's keys made in e.
func gated(t *testing.T) (*env, *registry) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
	return e, startServer(t, "--policy", filepath.Join(e.dir, "policy.yaml"))
}

func httpDo(t *testing.T, method, url string, body []byte, contentType string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The server enforces the policy whatever client moves the tag: the real
// oras CLI cannot tag an unsigned model to production; once signed it can,
// and the server records the move. Versions cannot be overwritten, and
// what a stage points at cannot be deleted.
func TestServerGate(t *testing.T) {
	e, reg := gated(t)
	repo := reg.Addr + "/team/gated"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")

	r := e.exec("", nil, orasBin, "tag", "--plain-http", repo+":1.0.0", "production")
	if r.Code == 0 || !strings.Contains(r.Stderr, "0 of 2 required signatures") {
		t.Fatalf("oras tag of an unsigned model to production: exit %d\n%s", r.Code, r.Stderr)
	}
	if r := e.modelreg("inspect", repo+":production"); r.Code == 0 {
		t.Fatalf("production exists after a refused move")
	}
	manifest := fetchManifest(t, "http://"+reg.Addr+"/v2/team/gated/manifests/"+v1)
	code, body := httpDo(t, "PUT", "http://"+reg.Addr+"/v2/team/gated/manifests/production", manifest, "application/vnd.oci.image.manifest.v1+json")
	if code != http.StatusForbidden || !strings.Contains(body, `"code":"DENIED"`) || !strings.Contains(body, "2 more needed from alice, bob, carol") {
		t.Fatalf("curl-style PUT to production: %d %s", code, body)
	}

	e.ok("sign", repo+":1.0.0", "--key", "alice.key")
	e.cosign(cosign3Bin, nil, "sign", "--key", "bob.key", "--tlog-upload=false", "--use-signing-config=false", "-y", repo+"@"+v1)
	e.oras("tag", repo+":1.0.0", "production")
	hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "production", "--output", "json").Stdout)
	if len(hist) != 1 || hist[0].Digest != v1 || len(hist[0].Keys) != 2 || !strings.Contains(hist[0].Reason, "oras") || hist[0].Previous != "" {
		t.Fatalf("server-written record: %+v", hist)
	}

	// Versions are immutable; the same bytes again are fine.
	writeFile(t, filepath.Join(e.dir, "other.bin"), "other content", 0o644)
	r = e.exec("", nil, orasBin, "push", "--plain-http", "--artifact-type", "application/vnd.cncf.model.manifest.v1+json", repo+":1.0.0", "other.bin")
	if r.Code == 0 || !strings.Contains(r.Stderr, "already exists with digest "+v1) {
		t.Errorf("oras push over a version: exit %d\n%s", r.Code, r.Stderr)
	}
	if code, body := httpDo(t, "PUT", "http://"+reg.Addr+"/v2/team/gated/manifests/1.0.0", manifest, "application/vnd.oci.image.manifest.v1+json"); code != http.StatusCreated {
		t.Errorf("re-PUT of identical content: %d %s", code, body)
	}

	// Deletes: a protected stage, and a version a stage points at.
	for _, ref := range []string{"production", "1.0.0", v1} {
		code, body := httpDo(t, "DELETE", "http://"+reg.Addr+"/v2/team/gated/manifests/"+ref, nil, "")
		if code != http.StatusForbidden || !strings.Contains(body, "DENIED") {
			t.Errorf("DELETE %s: %d %s", ref, code, body)
		}
	}
	if got := resolve(t, e, repo+":production"); got != v1 {
		t.Errorf("production is %s", got)
	}

	// Other content under a tag that is not a version keeps plain OCI
	// semantics: an image tag can move. A version tag cannot, whatever it
	// holds (TestVersionsImmutableOnEveryRoute).
	for _, c := range []string{"a", "b"} {
		writeFile(t, filepath.Join(e.dir, "layer.txt"), c, 0o644)
		e.oras("push", reg.Addr+"/team/app:latest", "layer.txt")
	}
}

func fetchManifest(t *testing.T, url string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}

// 20 concurrent promotions of one stage between two versions: the server
// serializes them, so the history's chain of previous digests is unbroken
// and its newest record matches the tag.
func TestConcurrentPromotionsSerialized(t *testing.T) {
	e, reg := gated(t)
	repo := reg.Addr + "/team/race"
	digests := map[string]string{}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		digests[v] = pushVersion(t, e, repo+":"+v, "content "+v)
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		e.ok("sign", repo+":"+v, "--key", "bob.key")
	}
	var wg sync.WaitGroup
	results := make([]result, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := []string{"1.0.0", "2.0.0"}[i%2]
			results[i] = e.exec("", nil, modelregBin, "promote", repo+":"+v, "--to", "production", "--policy", "policy.yaml", "--actor", fmt.Sprintf("worker-%d", i))
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Code != 0 {
			t.Errorf("promotion %d failed: %s", i, r.Stderr)
		}
	}
	hist := decode[[]promotion.Record](t, e.ok("history", repo, "--stage", "production", "--output", "json").Stdout)
	if len(hist) < 2 {
		t.Fatalf("only %d records for 20 promotions between two versions", len(hist))
	}
	if now := resolve(t, e, repo+":production"); hist[0].Digest != now {
		t.Errorf("newest record says %s, the tag says %s", hist[0].Digest, now)
	}
	for i := 0; i+1 < len(hist); i++ {
		if hist[i].Previous != hist[i+1].Digest {
			t.Errorf("chain broken at record %d: previous %s, next older record %s", i, hist[i].Previous, hist[i+1].Digest)
		}
		if hist[i].Digest == hist[i].Previous {
			t.Errorf("record %d moves the stage to where it was", i)
		}
	}
	if hist[len(hist)-1].Previous != "" {
		t.Errorf("oldest record has previous %s", hist[len(hist)-1].Previous)
	}
}
