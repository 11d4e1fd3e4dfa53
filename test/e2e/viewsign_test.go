package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/signature"
	orasregistry "oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// modelreg sign signs a version's image view too, and what a deploy
// pipeline runs against the view reference, the real cosign verify (v3
// on the bundle, v2 on the legacy .sig tag), accepts it through
// modelreg serve's view repository; another key is refused. The gate and
// modelreg verify count a signature on the server-derived view as
// approval of the version.
func TestSignedImageView(t *testing.T) {
	e, reg := gatedWith(t, `version: 1
keys:
  alice: alice.pub
  bob: bob.pub
stages:
  production:
    signatures: {keys: [alice, bob], threshold: 1}
`)
	repo := reg.Addr + "/team/sv"
	pushVersion(t, e, repo+":1.0.0", "bundle me")
	pushVersion(t, e, repo+":2.0.0", "legacy me")
	s := decode[client.Signed](t, e.ok("sign", repo+":1.0.0", "--key", "alice.key", "--output", "json").Stdout)
	if !strings.HasPrefix(s.Image, repo+"/image@sha256:") || s.ImageSignature == "" {
		t.Fatalf("sign did not sign the image view: %+v", s)
	}
	l := decode[client.Signed](t, e.ok("sign", repo+":2.0.0", "--key", "alice.key", "--format", "legacy", "--output", "json").Stdout)
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", s.Image)
	e.cosign(cosign2Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", l.Image)
	for _, c := range []struct{ bin, ref string }{{cosign3Bin, s.Image}, {cosign2Bin, l.Image}} {
		if r := e.exec("", nil, c.bin, "verify", "--key", "bob.pub", "--insecure-ignore-tlog=true", c.ref); r.Code == 0 {
			t.Errorf("%s verify of the view accepted alice's signature with bob's key", c.bin)
		}
	}

	// 3.0.0: bob signs only its image view (as a pipeline signing what it
	// deploys would). The gate lets it into production on that signature;
	// modelreg verify agrees and says where the signature is.
	pushVersion(t, e, repo+":3.0.0", "view-signed")
	view := strings.TrimSpace(e.ok("image", repo+":3.0.0").Stdout)
	ctx := context.Background()
	bob, err := key.LoadPrivate(filepath.Join(e.dir, "bob.key"), []byte(keyPassword))
	if err != nil {
		t.Fatal(err)
	}
	vr, err := orasremote.NewRepository(view)
	if err != nil {
		t.Fatal(err)
	}
	vr.PlainHTTP = true
	_, digest, _ := strings.Cut(view, "@")
	vd, err := vr.Resolve(ctx, digest)
	if err != nil {
		t.Fatal(err)
	}
	mr, _ := orasremote.NewRepository(repo)
	mr.PlainHTTP = true
	if _, err := signature.Sign(ctx, mr, orasregistry.Reference{Registry: reg.Addr, Repository: "team/sv"}, vd, bob, signature.SignOptions{Form: signature.FormBundle}); err != nil {
		t.Fatal(err)
	}
	v := decode[client.Verdict](t, e.ok("verify", repo+":3.0.0", "--stage", "production", "--policy", "policy.yaml", "--output", "json").Stdout)
	if !v.OK || len(v.Signatures) != 1 || !strings.HasPrefix(v.Signatures[0].Source, "image view: ") {
		t.Errorf("verify of a version signed on its view: ok %v, signatures %+v", v.OK, v.Signatures)
	}
	e.ok("promote", repo+":3.0.0", "--to", "production", "--policy", "policy.yaml")
	if got := strings.TrimSpace(e.ok("image", repo+":3.0.0").Stdout); got != view {
		t.Errorf("the view changed: %s, %s", got, view)
	}
	// An unsigned version (no signature on it or its view) stays out.
	pushVersion(t, e, repo+":4.0.0", "unsigned")
	e.fails([]string{"production"}, "promote", repo+":4.0.0", "--to", "production", "--policy", "policy.yaml")
}
