package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA is a certificate authority made by the test: no openssl, nothing
// from the machine's trust store.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string // the CA certificate's file
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	ca := &testCA{cert: must(x509.ParseCertificate(der)), key: key, pem: filepath.Join(dir, name+".pem")}
	writeFile(t, ca.pem, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	return ca
}

// issue writes a server certificate for 127.0.0.1 and localhost, with the
// given serial, and its key; each file is replaced by rename, as
// cert-manager and Kubernetes secrets do.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "modelreg test server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key))
	keyDER := must(x509.MarshalPKCS8PrivateKey(key))
	replaceFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	replaceFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsClient trusts the CA in caFile alone.
func tlsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(must(os.ReadFile(caFile))) {
		t.Fatal("no CA certificate in", caFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
}

// servedSerial is the serial number of the certificate the server at addr
// presents now (the chain is verified against the CA).
func servedSerial(t *testing.T, addr, caFile string) int64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(must(os.ReadFile(caFile)))
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// waitLog waits until the server's log holds a line with every fragment
// (or the test's deadline: a failure, not a timing assertion).
func waitLog(t *testing.T, p *serveProc, fragments ...string) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(p.logs.String(), "\n") {
			all := true
			for _, f := range fragments {
				all = all && strings.Contains(line, f)
			}
			if all {
				return
			}
		}
	}
	t.Fatalf("no log line with %q; logs:\n%s", fragments, p.logs.String())
}

// The whole path over TLS with a private CA: modelreg push (in parts),
// pull (in ranges), sign, verify and promote with --ca-file or
// MODELREG_CA_FILE; the real oras (--ca-file), crane and cosign v3
// (SSL_CERT_FILE) against the same server; HTTP/2 negotiated on the
// registry and extension routes; and an untrusted CA refused with an
// error that names --ca-file.
func TestTLSEndToEnd(t *testing.T) {
	e := newEnv(t)
	ca := newTestCA(t, e.dir, "test-ca")
	certFile, keyFile := filepath.Join(e.dir, "tls.crt"), filepath.Join(e.dir, "tls.key")
	ca.issue(t, certFile, keyFile, 100)
	e.ok("keygen", "--output-key-prefix", "alice")
	if r := e.exec("", nil, cosign3Bin, "generate-key-pair", "--output-key-prefix", "bob"); r.Code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.Stderr)
	}
	policy := filepath.Join(e.dir, "policy.yaml")
	writeFile(t, policy, "version: 1\nkeys:\n  alice: alice.pub\n  bob: bob.pub\nstages:\n  staging:\n    signatures: {keys: [alice, bob], threshold: 2}\n", 0o644)
	// An events receiver served over HTTPS with a certificate of the same
	// private CA, trusted through events.caFile.
	hook := startTLSReceiver(t, ca, e.dir, "hook-secret-0123456789abcdef")
	cfg := filepath.Join(e.dir, "serve.yaml")
	writeFile(t, cfg, "events:\n  caFile: "+ca.pem+"\n  subscriptions:\n    - name: hook\n      url: "+hook.url+"\n      secret: hook-secret-0123456789abcdef\n", 0o644)
	p := startServeAt(t, t.TempDir(), "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile, "--policy", policy, "--config", cfg)
	waitLog(t, p, `"msg":"registry listening"`, `"tls":true`)
	reg := p.reg
	repo := reg.Addr + "/team/tls"
	withCA := []string{"MODELREG_CA_FILE=" + ca.pem}

	// modelreg: a push of a 72 MiB file sent in parts over 4 connections,
	// with --ca-file; a pull in ranges, with MODELREG_CA_FILE.
	src := filepath.Join(e.dir, "m")
	sum := writeRandom(t, filepath.Join(src, "model.safetensors"), 72<<20, 14)
	writeFile(t, filepath.Join(src, "config.json"), `{"layers": 2}`, 0o644)
	v1 := strings.TrimSpace(e.ok("--ca-file", ca.pem, "push", repo+":1.0.0", src, "--connections", "4", "--dedupe", "stream", "--no-cache").Stdout)
	if !digestRE.MatchString(v1) {
		t.Fatalf("push printed %q, want a digest", v1)
	}
	if n := strings.Count(p.logs.String(), "/parts/"); n == 0 {
		t.Errorf("the push over TLS sent no parts; server log:\n%s", p.logs.String())
	}
	out := filepath.Join(e.dir, "out")
	if r := e.exec("", withCA, modelregBin, "pull", repo+":1.0.0", "-o", out, "--connections", "4"); r.Code != 0 {
		t.Fatalf("pull with MODELREG_CA_FILE: %s", r.Stderr)
	}
	if got := tree(t, out)["model.safetensors"]; !strings.HasSuffix(got, sum) {
		t.Errorf("pulled back as %s, want %s", got, sum)
	}

	// Signatures from modelreg and the real cosign v3, then the gate.
	e.ok("--ca-file", ca.pem, "sign", repo+":1.0.0", "--key", "alice.key")
	sslEnv := []string{"SSL_CERT_FILE=" + ca.pem}
	e.cosign(cosign3Bin, sslEnv, "sign", "--key", "bob.key", "--tlog-upload=false", "--use-signing-config=false", "-y", repo+"@"+v1)
	e.cosign(cosign3Bin, sslEnv, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", repo+"@"+v1)
	v := decode[verifyOut](t, e.ok("--ca-file", ca.pem, "verify", repo+":1.0.0", "--stage", "staging", "--policy", policy, "--output", "json").Stdout)
	if !v.OK || len(v.Signatures) < 2 {
		t.Errorf("verify over TLS: %+v", v)
	}
	e.ok("--ca-file", ca.pem, "promote", repo+":1.0.0", "--to", "staging", "--policy", policy)

	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if byID, _ := hook.received(); len(byID) > 0 {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the https receiver got no event; problems %v; server log:\n%s", hook.problems(), p.logs.String())
		}
	}

	// The real oras and crane.
	if r := e.exec("", nil, orasBin, "manifest", "fetch", "--ca-file", ca.pem, "--descriptor", repo+":staging"); r.Code != 0 || !strings.Contains(r.Stdout, v1) {
		t.Errorf("oras manifest fetch --ca-file: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	orasOut := filepath.Join(e.dir, "oras-out")
	if r := e.exec("", nil, orasBin, "pull", "--ca-file", ca.pem, repo+":1.0.0", "-o", orasOut); r.Code != 0 {
		t.Errorf("oras pull --ca-file: %s", r.Stderr)
	} else if got := tree(t, orasOut)["model.safetensors"]; !strings.HasSuffix(got, sum) {
		t.Errorf("oras pulled %s, want %s", got, sum)
	}
	if r := e.exec("", nil, orasBin, "discover", "--ca-file", ca.pem, "--format", "json", repo+"@"+v1); r.Code != 0 || !strings.Contains(r.Stdout, "promotion") {
		t.Errorf("oras discover --ca-file (Referrers API over TLS): exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := e.exec("", sslEnv, craneBin, "digest", repo+":staging"); r.Code != 0 || strings.TrimSpace(r.Stdout) != v1 {
		t.Errorf("crane digest with SSL_CERT_FILE: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := e.exec("", sslEnv, craneBin, "ls", repo); r.Code != 0 || !strings.Contains(r.Stdout, "staging") {
		t.Errorf("crane ls with SSL_CERT_FILE: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	// HTTP/2 on the registry and on each kind of extension route.
	hc := tlsClient(t, ca.pem)
	for _, path := range []string{
		"/v2/",
		"/v2/_oci/ext/discover",
		"/v2/team/tls/referrers/" + v1,
		"/v2/team/tls/manifests/staging",
		"/v2/team/tls/image/manifests/1.0.0",
		"/v2/_modelreg/v1/status",
		"/v2/_modelreg/v1/models",
		"/v2/_modelreg/v1/models/team/tls/versions/1.0.0",
		"/v2/_modelreg/v1/models/team/tls/stages/staging/history",
		"/",
		"/models/team/tls",
	} {
		req := must(http.NewRequest(http.MethodGet, "https://"+reg.Addr+path, nil))
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("GET %s: %s negotiated, want HTTP/2.0", path, resp.Proto)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s over HTTP/2: %s\n%s", path, resp.Status, body)
		}
	}
	var status struct{ ProtectedStages []string }
	resp := must(hc.Get("https://" + reg.Addr + "/v2/_modelreg/v1/status"))
	json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if strings.Join(status.ProtectedStages, ",") != "staging" {
		t.Errorf("status over TLS: %+v", status)
	}

	// No CA, or another one: refused, naming the fix.
	for name, args := range map[string][]string{
		"system pool only": nil,
		"another CA":       {"--ca-file", newTestCA(t, e.dir, "other-ca").pem},
	} {
		t.Run(name, func(t *testing.T) {
			r := e.fails([]string{"--ca-file", "does not trust", `"CN=test-ca"`}, append(args, "inspect", repo+":1.0.0")...)
			if r.Code != 1 {
				t.Errorf("exit %d, want 1", r.Code)
			}
		})
	}
	// --plain-http against a TLS server: told to drop it.
	e.fails([]string{"HTTPS"}, "--plain-http", "inspect", repo+":1.0.0")
	e.fails([]string{"no PEM certificate"}, "--ca-file", policy, "inspect", repo+":1.0.0")
}

// A renewed certificate is served without a restart: when its files are
// replaced (the next handshake sees it), on SIGHUP, and a broken pair
// (a certificate without its new key) keeps the one in force. The files
// come from the tls: section of --config here.
func TestTLSCertRotation(t *testing.T) {
	e := newEnv(t)
	ca := newTestCA(t, e.dir, "test-ca")
	certFile, keyFile := filepath.Join(e.dir, "tls.crt"), filepath.Join(e.dir, "tls.key")
	ca.issue(t, certFile, keyFile, 1)
	cfg := filepath.Join(e.dir, "serve.yaml")
	writeFile(t, cfg, "tls:\n  cert: "+certFile+"\n  key: "+keyFile+"\n", 0o644)
	p := startServeAt(t, t.TempDir(), "127.0.0.1:0", "--config", cfg)
	waitLog(t, p, `"msg":"registry listening"`, `"tls":true`)
	addr := p.reg.Addr
	if s := servedSerial(t, addr, ca.pem); s != 1 {
		t.Fatalf("serial %d served, want 1", s)
	}

	// Files replaced: the next handshake gets the new certificate.
	ca.issue(t, certFile, keyFile, 2)
	if s := servedSerial(t, addr, ca.pem); s != 2 {
		t.Errorf("after the files changed: serial %d served, want 2", s)
	}

	// SIGHUP re-reads them before any handshake asks.
	ca.issue(t, certFile, keyFile, 3)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, `"msg":"TLS certificate loaded"`, `"why":"reload asked"`, `"serial":"3"`)
	if s := servedSerial(t, addr, ca.pem); s != 3 {
		t.Errorf("after SIGHUP: serial %d served, want 3", s)
	}

	// Half a rotation (a new certificate, the old key): refused, logged,
	// and the certificate in force stays.
	keep := must(os.ReadFile(keyFile))
	ca.issue(t, certFile, keyFile, 4)
	replaceFile(t, keyFile, keep)
	if s := servedSerial(t, addr, ca.pem); s != 3 {
		t.Errorf("with a mismatched pair: serial %d served, want 3 (the one in force)", s)
	}
	waitLog(t, p, `the new certificate was not taken`, `is not the key of the certificate`)
	ca.issue(t, certFile, keyFile, 5)
	if s := servedSerial(t, addr, ca.pem); s != 5 {
		t.Errorf("after the pair was fixed: serial %d served, want 5", s)
	}

	// And clients work across the rotations.
	writeFile(t, filepath.Join(e.dir, "m", "w.bin"), "weights", 0o644)
	e.ok("--ca-file", ca.pem, "push", addr+"/team/r:1.0.0", filepath.Join(e.dir, "m"))
}

// Half a pair, a mismatched pair, a key for a certificate: the server
// does not start, and says what is wrong.
func TestTLSServeRefusesBadPairs(t *testing.T) {
	e := newEnv(t)
	ca := newTestCA(t, e.dir, "test-ca")
	a := [2]string{filepath.Join(e.dir, "a.crt"), filepath.Join(e.dir, "a.key")}
	b := [2]string{filepath.Join(e.dir, "b.crt"), filepath.Join(e.dir, "b.key")}
	ca.issue(t, a[0], a[1], 1)
	ca.issue(t, b[0], b[1], 2)
	half := filepath.Join(e.dir, "half.yaml")
	writeFile(t, half, "tls:\n  cert: "+a[0]+"\n", 0o644)
	data := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--tls-cert", a[0]}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", a[1]}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"--config", half}, 2, "tls: give both cert and key"},
		{[]string{"--tls-cert", a[0], "--tls-key", b[1]}, 1, "is not the key of the certificate"},
		{[]string{"--tls-cert", a[1], "--tls-key", a[0]}, 1, "swapped"},
		{[]string{"--tls-cert", filepath.Join(e.dir, "missing.crt"), "--tls-key", a[1]}, 1, "missing.crt"},
	} {
		r := e.modelreg(append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data}, c.args...)...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("serve %s: exit %d, want %d with %q:\n%s", strings.Join(c.args, " "), r.Code, c.code, c.want, r.Stderr)
		}
	}
}

// startTLSReceiver is startReceiver over HTTPS, with a certificate for
// 127.0.0.1 that ca signed.
func startTLSReceiver(t *testing.T, ca *testCA, dir, secret string) *receiver {
	t.Helper()
	rc := &receiver{t: t, secret: []byte(secret)}
	certFile, keyFile := filepath.Join(dir, "hook.crt"), filepath.Join(dir, "hook.key")
	ca.issue(t, certFile, keyFile, 50)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc}
	go srv.ServeTLS(ln, certFile, keyFile)
	t.Cleanup(func() { srv.Close() })
	rc.url = "https://" + ln.Addr().String() + "/hook"
	return rc
}
