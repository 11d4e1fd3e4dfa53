package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/distribution-spec/specs-go/v1/extensions"
)

func parseConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The storage section reaches distribution as written, with modelreg's
// defaults only where it is silent; replicas get no in-memory cache.
func TestEffectiveStorage(t *testing.T) {
	one := effectiveStorage("/data", parseConfig(t, ""))
	if one.Type() != "filesystem" || one["filesystem"]["rootdirectory"] != "/data" || one["delete"]["enabled"] != true || one["cache"]["blobdescriptor"] != "inmemory" {
		t.Errorf("default: %#v", one)
	}
	s3 := effectiveStorage("/data", parseConfig(t, "storage:\n  s3: {bucket: models, region: us-east-1}\n  delete: {enabled: false}\n  redirect: {disable: true}\n"))
	if s3.Type() != "s3" || s3["s3"]["bucket"] != "models" || s3["delete"]["enabled"] != false || s3["redirect"]["disable"] != true || s3["filesystem"] != nil {
		t.Errorf("s3: %#v", s3)
	}
	fs := effectiveStorage("/data", parseConfig(t, "storage: filesystem\n"))
	if fs["filesystem"]["rootdirectory"] != "/data" {
		t.Errorf("filesystem without a root: %#v", fs)
	}
	shared := effectiveStorage("/data", parseConfig(t, "storage:\n  filesystem: {rootdirectory: /nfs}\nreplicas: true\nuploadSecret: /s\n"))
	if _, ok := shared["cache"]; ok || shared["filesystem"]["rootdirectory"] != "/nfs" {
		t.Errorf("replicas: %#v", shared)
	}
}

// Replicas on one storage: the upload secret comes from the shared file,
// keys must exist (never made per replica), and the uploads in parts,
// which live in one process, are off and not discovered.
func TestReplicasShareState(t *testing.T) {
	shared, secretFile := t.TempDir(), filepath.Join(t.TempDir(), "upload-secret")
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, "storage:\n  filesystem: {rootdirectory: "+shared+"}\nreplicas: true\nuploadSecret: "+secretFile+"\n")
	log := slog.New(slog.NewTextHandler(testLog, nil))

	data := t.TempDir()
	_, err := New(t.Context(), Options{Addr: "127.0.0.1:0", DataDir: data, Config: cfg, Logger: log})
	if err == nil || !strings.Contains(err.Error(), "server-key.pem is missing") || !strings.Contains(err.Error(), "openssl genpkey") {
		t.Fatalf("a replica without the shared server key: %v", err)
	}

	// The key the first server made, given to both replicas.
	first := t.TempDir()
	s0, err := New(t.Context(), Options{Addr: "127.0.0.1:0", DataDir: first, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s0.ln.Close()
	s0.closeIndex()
	key, err := os.ReadFile(filepath.Join(first, "modelreg", "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{data, t.TempDir()} {
		if err := os.MkdirAll(filepath.Join(d, "modelreg"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "modelreg", "server-key.pem"), key, 0o600); err != nil {
			t.Fatal(err)
		}
		dc, err := distributionConfig(d, Options{UploadSecret: secretFile, Config: cfg}, effectiveStorage(d, cfg))
		if err != nil {
			t.Fatal(err)
		}
		if dc.HTTP.Secret != hex.EncodeToString(secret) {
			t.Errorf("replica on %s signs upload state with another secret", d)
		}
		if _, err := os.Stat(filepath.Join(d, "modelreg", "http-secret")); err == nil {
			t.Errorf("a per-replica secret was made beside the shared one")
		}
		s, err := New(t.Context(), Options{Addr: "127.0.0.1:0", DataDir: d, Config: cfg, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		h := s.Handler()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/_oci/ext/discover", nil))
		var list extensions.ExtensionList
		if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Extensions) != 1 {
			t.Fatalf("discover: %s %v", rec.Body, err)
		}
		if slices.Contains(list.Extensions[0].Endpoints, transfer.PartsEndpoint) {
			t.Errorf("replicas discover uploads in parts: %v", list.Extensions[0].Endpoints)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v2/_modelreg/v1/models/team/m/uploads", strings.NewReader(`{"size": 10}`)))
		if rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Body.String(), "replicas share storage") {
			t.Errorf("parts on a replica: %d %s", rec.Code, rec.Body)
		}
		s.ln.Close()
		s.closeIndex()
	}

	// One process discovers them.
	s, err := New(t.Context(), Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.ln.Close(); s.closeIndex() }()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/_oci/ext/discover", nil))
	if !strings.Contains(rec.Body.String(), transfer.PartsEndpoint) {
		t.Errorf("one server does not discover uploads in parts: %s", rec.Body)
	}
}

// What distribution or the driver would refuse with a panic or on the
// first push is refused by New, with the fix.
func TestStorageRefusedAtStart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(testLog, nil))
	for _, tc := range []struct{ conf, want string }{
		{"storage:\n  gcs: {bucket: b}\n", "not built into modelreg serve"},
		{"middleware:\n  storage:\n    - name: akamai\n", "no storage middleware registered with name: akamai"},
		{"middleware:\n  storage:\n    - name: redirect\n", "middleware.storage redirect"},
		{"storage:\n  filesystem: {}\n  redirect: {disable: maybe}\n", "distribution refused"},
		{"uploadSecret: /nonexistent/secret\n", "openssl rand -hex 32"},
	} {
		_, err := New(t.Context(), Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Config: parseConfig(t, tc.conf), Logger: log, Bare: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.conf, err, tc.want)
		}
	}
}
