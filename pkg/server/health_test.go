package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/signature"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2/registry"
)

// startServer runs a server with opts until the test ends.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts.Addr = "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(testLog, nil))
	s, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// /healthz and /readyz answer without credentials on a server that
// needs them for everything else; /readyz publishes the policy's digest
// and turns 503 when storage or the index stops answering.
func TestProbes(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600)
	_, pub, _ := key.Generate([]byte("pw"))
	os.MkdirAll(filepath.Join(dir, "modelreg"), 0o750)
	os.WriteFile(filepath.Join(dir, "modelreg", "alice.pub"), pub, 0o644)
	policyBytes := []byte("version: 1\nkeys:\n  alice: " + filepath.Join(dir, "modelreg", "alice.pub") + "\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n")
	os.WriteFile(DefaultPolicyPath(dir), policyBytes, 0o644)
	sum := sha256.Sum256(policyBytes)
	s := startServer(t, Options{DataDir: dir, Htpasswd: htpasswd})
	base := "http://" + s.Addr()

	refused := testutil.ToFloat64(metricRequests.WithLabelValues("base", "GET", "401"))
	if resp, _ := get(t, base+"/v2/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/v2/ without credentials: %s", resp.Status)
	}
	if got := testutil.ToFloat64(metricRequests.WithLabelValues("base", "GET", "401")) - refused; got != 1 {
		t.Errorf("refused requests counted %v times, want 1", got)
	}
	if resp, body := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %s %q", resp.Status, body)
	}
	resp, body := get(t, base+"/readyz")
	var rd Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil || resp.StatusCode != http.StatusOK || !rd.Ready || rd.Storage != "ok" || rd.Index != "ok" {
		t.Fatalf("/readyz: %s %s", resp.Status, body)
	}
	if want := "sha256:" + hex.EncodeToString(sum[:]); rd.PolicyDigest != want || resp.Header.Get(headerPolicyDigest) != want {
		t.Errorf("/readyz policy digest %q (header %q), want %q", rd.PolicyDigest, resp.Header.Get(headerPolicyDigest), want)
	}
	if rd.AccessDigest != "" {
		t.Errorf("access digest without an access policy: %q", rd.AccessDigest)
	}

	// Storage that fails: the registry root is a file now.
	os.RemoveAll(filepath.Join(dir, "docker"))
	os.WriteFile(filepath.Join(dir, "docker"), nil, 0o600)
	resp, body = get(t, base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"ready":false`) || !strings.Contains(body, "storage does not answer") {
		t.Errorf("/readyz with broken storage: %s %s", resp.Status, body)
	}
	os.Remove(filepath.Join(dir, "docker"))
	if resp, body := get(t, base+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz with storage back: %s %s", resp.Status, body)
	}
	// An index that fails.
	s.idx.Close()
	resp, body = get(t, base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "the index does not answer") {
		t.Errorf("/readyz with the index closed: %s %s", resp.Status, body)
	}
	if resp, _ := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with the index closed: %s (liveness must not restart a replica for a dependency)", resp.Status)
	}
}

// /metrics counts requests by route class, bytes in and out, and the
// gate's decisions.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	privPEM, pub, err := key.Generate([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "modelreg"), 0o750)
	os.WriteFile(filepath.Join(dir, "modelreg", "alice.pub"), pub, 0o644)
	os.WriteFile(DefaultPolicyPath(dir), []byte("version: 1\nkeys:\n  alice: "+filepath.Join(dir, "modelreg", "alice.pub")+
		"\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n"), 0o644)
	addr, stop := run(t, dir, false)
	defer stop()

	count := func() map[string]float64 {
		return map[string]float64{
			"allowed":   testutil.ToFloat64(metricGateDecisions.WithLabelValues("allowed")),
			"refused":   testutil.ToFloat64(metricGateDecisions.WithLabelValues("refused")),
			"blobPuts":  testutil.ToFloat64(metricRequests.WithLabelValues("upload", "PUT", "201")),
			"blobGets":  testutil.ToFloat64(metricRequests.WithLabelValues("blob", "GET", "200")),
			"bytesIn":   testutil.ToFloat64(metricBytesIn.WithLabelValues("upload")),
			"manifests": testutil.ToFloat64(metricRequests.WithLabelValues("manifest", "PUT", "201")),
		}
	}
	before := count()
	a := repo(t, addr, "team/metrics")
	v1 := pushModel(t, a, "1.0.0", map[string]string{"w.bin": "unsigned weights"}, nil)
	v2 := pushModel(t, a, "2.0.0", map[string]string{"w.bin": "signed weights!"}, nil)
	priv, err := key.ParsePrivate(privPEM, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signature.Sign(context.Background(), a, registry.Reference{Registry: addr, Repository: "team/metrics"}, v2, priv, signature.SignOptions{Form: signature.FormBundle}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Tag(ctx, v1, "production"); err == nil {
		t.Fatal("an unsigned version entered production")
	}
	if err := a.Tag(ctx, v2, "production"); err != nil {
		t.Fatal(err)
	}
	layer := layerOf(t, a, v2)
	outBefore := testutil.ToFloat64(metricBytesOut.WithLabelValues("blob"))
	rc, err := a.Blobs().Fetch(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	if got := testutil.ToFloat64(metricBytesOut.WithLabelValues("blob")) - outBefore; got != float64(len("signed weights!")) {
		t.Errorf("a blob GET of %d bytes counted %v bytes out", len("signed weights!"), got)
	}
	after := count()
	d := func(k string) float64 { return after[k] - before[k] }
	if d("allowed") != 1 || d("refused") != 1 {
		t.Errorf("gate decisions: %v allowed, %v refused; want 1 and 1", d("allowed"), d("refused"))
	}
	if d("blobPuts") < 2 || d("bytesIn") < float64(len("unsigned weights")+len("signed weights!")) {
		t.Errorf("uploads: %v PUTs, %v bytes in", d("blobPuts"), d("bytesIn"))
	}
	if d("blobGets") != 1 {
		t.Errorf("blob GETs: %v", d("blobGets"))
	}
	if d("manifests") < 3 {
		t.Errorf("manifest PUTs counted: %v", d("manifests"))
	}
	_, text := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`modelreg_gate_decisions_total{decision="refused"}`,
		`modelreg_http_request_duration_seconds_bucket{class="manifest",le=`,
		`modelreg_http_requests_total{class="blob",code="200",method="GET"}`,
		"modelreg_index_pending_repositories 0",
		`modelreg_http_response_bytes_total{class="blob"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// layerOf returns the first layer of the manifest desc.
func layerOf(t *testing.T, a interface {
	FetchReference(context.Context, string) (ocispec.Descriptor, io.ReadCloser, error)
}, desc ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	_, rc, err := a.FetchReference(context.Background(), desc.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var m ocispec.Manifest
	if err := json.NewDecoder(rc).Decode(&m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest %s: %v", desc.Digest, err)
	}
	return m.Layers[0]
}
