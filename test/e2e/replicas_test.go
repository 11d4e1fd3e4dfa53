package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/pgtest"
	"github.com/modelreg/modelreg/pkg/promotion"
)

// Two `modelreg serve` replicas on one S3 bucket (SeaweedFS) and one
// PostgreSQL index, as docs/deploy-scale.md sets them up:
// a push through A is listed, searched and pulled through B at once; 20
// concurrent promotions split across both leave one unbroken hash chain;
// a replica killed (SIGKILL) mid-push or mid-promotion leaves the other
// serving and nothing lost.
func TestReplicas(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	pol := filepath.Join(e.dir, "policy.yaml")
	writeFile(t, pol, policyYAML, 0o644)
	st := startWeed(t)
	dsn := pgtest.DB(t)
	secret := filepath.Join(t.TempDir(), "upload-secret")
	raw := make([]byte, 32)
	rand.Read(raw)
	writeFile(t, secret, hex.EncodeToString(raw)+"\n", 0o600)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cfg := st.config(t, "", "replicas: true\nuploadSecret: "+secret+"\n")
	args := []string{"--index", dsn, "--policy", pol, "--config", cfg}
	replicaData := func() string {
		d := t.TempDir()
		writeFile(t, filepath.Join(d, "modelreg", "server-key.pem"), string(key), 0o600)
		return d
	}
	dataA, dataB := replicaData(), replicaData()
	a := startServeAt(t, dataA, "127.0.0.1:0", args...)
	b := startServeAt(t, dataB, "127.0.0.1:0", args...)
	ra, rb := a.reg.Addr+"/team/r", b.reg.Addr+"/team/r"

	v1 := pushVersion(t, e, ra+":1.0.0", "replica one")
	v2 := pushVersion(t, e, ra+":2.0.0", "replica two")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		e.ok("sign", ra+":"+v, "--key", "alice.key")
		e.ok("sign", rb+":"+v, "--key", "bob.key")
	}
	// Through B, at once: listed, searched, pulled.
	if out := e.ok("list", rb).Stdout; !strings.Contains(out, "1.0.0") || !strings.Contains(out, "2.0.0") {
		t.Errorf("B lists:\n%s", out)
	}
	if out := e.ok("search", "repository = 'team/r'", "--registry", b.reg.Addr).Stdout; !strings.Contains(out, "2.0.0") {
		t.Errorf("B's search:\n%s", out)
	}
	e.ok("pull", rb+":2.0.0", "-o", filepath.Join(e.dir, "via-b"))

	// 20 promotions at once, alternately through A and B, alternately to
	// each version: one stage, one chain.
	var wg sync.WaitGroup
	results := make([]result, 20)
	for i := range 20 {
		wg.Go(func() {
			repo, v := ra, "1.0.0"
			if i%2 == 1 {
				repo = rb
			}
			if i%4 >= 2 {
				v = "2.0.0"
			}
			results[i] = e.exec("", nil, modelregBin, "promote", repo+":"+v, "--to", "production", "--policy", "policy.yaml", "--actor", fmt.Sprintf("worker-%d", i))
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.Code != 0 {
			t.Errorf("promotion %d: %s", i, r.Stderr)
		}
	}
	check := func(via, when string) {
		t.Helper()
		if r := e.modelreg("history", via, "--stage", "production", "--verify"); r.Code != 0 {
			t.Fatalf("%s: history --verify through %s: %s", when, via, r.Stderr)
		}
		hist := decode[[]promotion.Record](t, e.ok("history", via, "--stage", "production", "--output", "json").Stdout)
		holds := resolve(t, e, via+":production")
		if len(hist) == 0 || hist[0].Digest != holds {
			t.Fatalf("%s: production holds %s, the newest record names %+v", when, holds, hist[0])
		}
	}
	check(ra, "after 20 concurrent promotions")
	check(rb, "after 20 concurrent promotions")
	hist := decode[[]promotion.Record](t, e.ok("history", rb, "--stage", "production", "--output", "json").Stdout)
	t.Logf("20 concurrent promotions through two replicas: %d records in one chain (moves to the version production already held are no-ops)", len(hist))

	// kill -9 of A in the middle of a push: B keeps serving, and the push
	// made again through B completes.
	big := filepath.Join(e.dir, "big")
	writeRandom(t, filepath.Join(big, "model.safetensors"), 300<<20, 77)
	_, pushed := startPush(t, e, ra+":3.0.0", big)
	uploads := "registry/docker/registry/v2/repositories/team/r/_uploads/"
	for st.objects(t, uploads) == 0 {
		select {
		case <-pushed:
			t.Fatal("the push ended before the store held any of its upload")
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.kill()
	<-pushed
	e.ok("pull", rb+":1.0.0", "-o", filepath.Join(e.dir, "during"))
	e.ok("push", rb+":3.0.0", big)
	e.ok("pull", rb+":3.0.0", "-o", filepath.Join(e.dir, "pushed-again"))

	// kill -9 of B in the middle of promotions: A, restarted, finds one
	// chain whose newest record is what production holds.
	a = startServeAt(t, dataA, a.reg.Addr, args...)
	bodies := [][]byte{fetchManifest(t, "http://"+b.reg.Addr+"/v2/team/r/manifests/"+v1), fetchManifest(t, "http://"+b.reg.Addr+"/v2/team/r/manifests/"+v2)}
	stop := promoteLoop("http://"+b.reg.Addr+"/v2/team/r/manifests/production", bodies)
	time.Sleep(400 * time.Millisecond)
	b.kill()
	if n := stop(); n == 0 {
		t.Fatal("no promotion went through B before the kill: the loop did not run")
	}
	check(ra, "after B was killed mid-promotion")
	b = startServeAt(t, dataB, b.reg.Addr, args...)
	check(rb, "after B's restart")
}
