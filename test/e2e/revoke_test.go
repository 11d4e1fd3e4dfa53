package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/audit"
	"github.com/modelreg/modelreg/pkg/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Key lifecycle: production was promoted on alice's and bob's signatures;
// the policy then revokes alice. The server re-reads the policy; `modelreg
// keys revoked` (one repository and the whole registry), `verify` and the
// audit report flag production; a new promotion that needs alice is
// refused by the client and by the server's gate, naming the revocation.
func TestRevokedKeyFlagsStageHeads(t *testing.T) {
	e, reg := gated(t)
	repo := reg.Addr + "/team/fraud"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")
	pushVersion(t, e, repo+":2.0.0", "two")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		e.cosign(cosign3Bin, nil, "sign", "--key", "bob.key", "--tlog-upload=false", "--use-signing-config=false", "-y", repo+":"+v)
	}
	e.ok("promote", repo+":1.0.0", "--to", "production", "--policy", "policy.yaml")
	clean := decode[client.RevokedReport](t, e.ok("keys", "revoked", repo, "--policy", "policy.yaml", "--output", "json").Stdout)
	if clean.Flagged != 0 || len(clean.Heads) != 1 || clean.Heads[0].Stage != "production" {
		t.Fatalf("before any revocation: %+v", clean)
	}

	// Revoke alice as of an hour ago, and wait until the server has it.
	since := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	revoked := strings.Replace(policyYAML, "alice: alice.pub", "alice: {path: alice.pub, revoked: "+since.Format(time.RFC3339)+", reason: key leaked}", 1)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), revoked, 0o644)
	waitPolicyDigest(t, reg.Addr, revoked)

	r := e.fails([]string{"1 stage head(s) rest on a revoked key"}, "keys", "revoked", repo, "--policy", "policy.yaml", "--output", "json")
	rep := decode[client.RevokedReport](t, r.Stdout)
	if rep.Flagged != 1 || len(rep.Heads) != 1 {
		t.Fatalf("keys revoked after the revocation: %+v", rep)
	}
	h := rep.Heads[0]
	if !h.Flagged || h.Stage != "production" || h.Digest != v1 || h.Satisfied || len(h.RevokedKeys) != 1 || h.RevokedKeys[0].Name != "alice" ||
		!h.RevokedKeys[0].Since.Equal(since) || !strings.Contains(h.Why, "no longer meets") {
		t.Errorf("flagged head: %+v", h)
	}
	// The whole registry, through its catalog, in text.
	r = e.fails([]string{"rest on a revoked key"}, "keys", "revoked", reg.Addr, "--policy", "policy.yaml")
	if !strings.Contains(r.Stdout, "team/fraud:production") || !strings.Contains(r.Stdout, "alice") {
		t.Errorf("keys revoked REGISTRY:\n%s", r.Stdout)
	}

	// verify shows alice's signature as revoked and flags production.
	r = e.fails([]string{"revoked by the policy"}, "verify", repo+":1.0.0", "--stage", "production", "--policy", "policy.yaml")
	if !strings.Contains(r.Stdout, "REVOKED") || !strings.Contains(r.Stdout, "team/fraud:production") {
		t.Errorf("verify output:\n%s", r.Stdout)
	}

	// The audit report flags it too.
	ar := decode[audit.Report](t, e.ok("audit", repo, "--format", "json", "--policy", "policy.yaml").Stdout)
	if f := ar.Flagged(); len(f) != 1 || f[0].Stage != "production" || f[0].Digest != v1 {
		t.Errorf("audit stage heads: %+v", ar.StageHeads)
	}
	if md := e.ok("audit", repo, "--policy", "policy.yaml").Stdout; !strings.Contains(md, "Stage heads resting on a revoked key") {
		t.Errorf("the Markdown report does not flag production:\n%s", md)
	}

	// A new promotion needing alice is refused: by modelreg promote (the
	// client's policy) and by the server's gate whatever the client.
	e.fails([]string{"revoked", "alice", "key leaked", "whatever time they claim"}, "promote", repo+":2.0.0", "--to", "production", "--policy", "policy.yaml")
	code, body := put(t, reg.Addr, "team/fraud", "production", ocispec.MediaTypeImageManifest, fetchManifest(t, "http://"+reg.Addr+"/v2/team/fraud/manifests/2.0.0"))
	wantDenied(t, "production on alice's revoked signature", code, body, "1 of 2 required", "is revoked by the policy since", "key leaked")
	if got := resolve(t, e, repo+":production"); got != v1 {
		t.Errorf("a refused promotion moved production to %s", got)
	}
}

// waitPolicyDigest waits (20 s at most) until the server's status
// endpoint says the policy in force is the file with content doc.
func waitPolicyDigest(t *testing.T, addr, doc string) {
	t.Helper()
	sum := sha256.Sum256([]byte(doc))
	want := "sha256:" + hex.EncodeToString(sum[:])
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			Policy struct{ Digest string } `json:"policy"`
		}
		apiGet(t, addr, "status", &st)
		if st.Policy.Digest == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's policy is %s 20 s after the file changed, want %s", st.Policy.Digest, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
