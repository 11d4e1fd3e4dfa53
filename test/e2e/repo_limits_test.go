package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// limitsServer starts modelreg serve with a configuration file holding
// the limits section given.
func limitsServer(t *testing.T, e *env, limits string) *registry {
	t.Helper()
	path := filepath.Join(e.dir, "serve.yaml")
	writeFile(t, path, limits, 0o644)
	return startServer(t, "--config", path)
}

// A storage quota refuses, with real oras, the push that would exceed it,
// naming the rule and how to raise it; other repositories are not
// limited; re-pushing what the repository holds is not refused; the
// limits are on the status endpoint.
func TestStorageQuotaRefusesPush(t *testing.T) {
	e := newEnv(t)
	reg := limitsServer(t, e, "limits:\n  quotas:\n    - repositories: [\"team/*\"]\n      bytes: 1MiB\n")
	writeRandom(t, filepath.Join(e.dir, "a.bin"), 600<<10, 1)
	writeRandom(t, filepath.Join(e.dir, "b.bin"), 600<<10, 2)
	e.oras("push", reg.Addr+"/team/small:1", "a.bin")
	e.oras("push", reg.Addr+"/team/small:1", "a.bin") // the same content again adds nothing
	r := e.exec("", nil, orasBin, "push", reg.Addr+"/team/small:2", "b.bin", "--plain-http")
	if r.Code == 0 {
		t.Fatalf("a push over the quota succeeded: %s", r.Stdout)
	}
	for _, want := range []string{"denied:", "repository team/small is limited to 1048576 bytes", "limits.quotas[0]", "raise limits.quotas[0].bytes"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("oras push over the quota: stderr does not say %q:\n%s", want, r.Stderr)
		}
	}
	if exists(t, reg.Addr, "team/small", "2") {
		t.Error("the refused version exists")
	}
	e.oras("push", reg.Addr+"/other/big:2", "b.bin") // no rule: no quota
	e.oras("push", reg.Addr+"/team/second:1", "b.bin")
	// Any client gets 403 DENIED.
	code, msg := put(t, reg.Addr, "team/small", "3", ocispec.MediaTypeImageManifest, fetchManifest(t, "http://"+reg.Addr+"/v2/other/big/manifests/2"))
	wantDenied(t, "a manifest over the quota", code, msg, "limits.quotas[0]")

	// A repository filled exactly to its quota takes the manifest (the
	// bound is inclusive) and then refuses any blob upload.
	cfg := upload(t, reg.Addr, "team/full", []byte("{}"))
	cfg.MediaType = ocispec.MediaTypeEmptyJSON
	full := func(n int64) ocispec.Manifest {
		return ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.data",
			Config: cfg, Layers: []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: digest.FromString("placeholder"), Size: n}}}
	}
	probe, _ := json.Marshal(full(1000000))
	n := int64(1<<20) - cfg.Size - int64(len(probe))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	m := full(n)
	m.Layers[0] = upload(t, reg.Addr, "team/full", data)
	m.Layers[0].MediaType = "application/octet-stream"
	body, _ := json.Marshal(m)
	if int64(len(body))+cfg.Size+n != 1<<20 {
		t.Fatalf("the manifest does not fill the quota exactly: %d bytes", int64(len(body))+cfg.Size+n)
	}
	if code, msg := put(t, reg.Addr, "team/full", "1", ocispec.MediaTypeImageManifest, body); code != http.StatusCreated {
		t.Fatalf("a manifest filling the quota exactly: %d %s", code, msg)
	}
	code, msg = httpDo(t, "POST", "http://"+reg.Addr+"/v2/team/full/blobs/uploads/", nil, "")
	wantDenied(t, "a blob upload to a full repository", code, msg, "uses 1048576 bytes", "no blob may be uploaded to it")

	var st struct {
		Limits struct {
			MaxReferrersPerSubject int
			MaxAnnotationBytes     int64
			Quotas                 []struct {
				Repositories []string
				Bytes        int64
			}
		}
	}
	apiGet(t, reg.Addr, "status", &st)
	if st.Limits.MaxReferrersPerSubject != 1000 || st.Limits.MaxAnnotationBytes != 64<<10 || len(st.Limits.Quotas) != 1 || st.Limits.Quotas[0].Bytes != 1<<20 {
		t.Errorf("status limits: %+v", st.Limits)
	}
}

// The 1001st referrer of one subject is refused (the default cap), with
// the real oras attach; the message names the limit.
func TestReferrersPerSubjectCapped(t *testing.T) {
	e := newEnv(t)
	reg := limitsServer(t, e, "limits: {}\n")
	writeFile(t, filepath.Join(e.dir, "model.bin"), "weights", 0o644)
	e.oras("push", reg.Addr+"/team/refs:1", "model.bin")
	raw := fetchManifest(t, "http://"+reg.Addr+"/v2/team/refs/manifests/1")
	sub := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	empty := upload(t, reg.Addr, "team/refs", []byte("{}"))
	empty.MediaType = ocispec.MediaTypeEmptyJSON
	for i := range 1000 {
		m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.note",
			Config: empty, Layers: []ocispec.Descriptor{empty}, Subject: &sub, Annotations: map[string]string{"n": fmt.Sprint(i)}}
		body, _ := json.Marshal(m)
		if code, msg := put(t, reg.Addr, "team/refs", digest.FromBytes(body).String(), ocispec.MediaTypeImageManifest, body); code != http.StatusCreated {
			t.Fatalf("referrer %d: %d %s", i+1, code, msg)
		}
	}
	writeFile(t, filepath.Join(e.dir, "note.txt"), "one too many", 0o644)
	r := e.exec("", nil, orasBin, "attach", reg.Addr+"/team/refs:1", "note.txt", "--artifact-type", "application/vnd.example.note", "--plain-http")
	if r.Code == 0 {
		t.Fatalf("the 1001st referrer was accepted: %s", r.Stdout)
	}
	for _, want := range []string{"denied:", "already has 1000 referrers", "limits.maxReferrersPerSubject"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("oras attach: stderr does not say %q:\n%s", want, r.Stderr)
		}
	}
	// The cap is per subject: another version takes referrers.
	e.oras("push", reg.Addr+"/team/refs:2", "model.bin", "--annotation", "v=2")
	e.oras("attach", reg.Addr+"/team/refs:2", "note.txt", "--artifact-type", "application/vnd.example.note")
}

// A referrer (or a model version) whose annotations exceed the cap (64
// KiB by default) is refused with 400 by oras, naming the limit; one under
// it is taken. Other manifests keep the spec's 4 MiB manifest bound (the
// OCI conformance suite pushes 3.9 MB of annotations on an image).
func TestOversizedAnnotationRefused(t *testing.T) {
	e := newEnv(t)
	reg := limitsServer(t, e, "limits:\n  maxAnnotationBytes: 64KiB\n")
	writeFile(t, filepath.Join(e.dir, "model.bin"), "weights", 0o644)
	writeFile(t, filepath.Join(e.dir, "note.txt"), "a note", 0o644)
	big, _ := json.Marshal(map[string]map[string]string{"$manifest": {"notes": strings.Repeat("x", 65<<10)}})
	writeFile(t, filepath.Join(e.dir, "big.json"), string(big), 0o644)
	// An image-like artifact with them: the manifest bound only.
	e.oras("push", reg.Addr+"/team/ann:1", "model.bin", "--annotation-file", "big.json")
	r := e.exec("", nil, orasBin, "attach", reg.Addr+"/team/ann:1", "note.txt", "--artifact-type", "application/vnd.example.note", "--annotation-file", "big.json", "--plain-http")
	if r.Code == 0 {
		t.Fatalf("a referrer with 65 KiB of annotations was accepted: %s", r.Stdout)
	}
	for _, want := range []string{"size invalid:", "over the limit of 65536 bytes per manifest", "limits.maxAnnotationBytes"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("oras attach: stderr does not say %q:\n%s", want, r.Stderr)
		}
	}
	// The status code, seen by any client: 400 SIZE_INVALID.
	empty := upload(t, reg.Addr, "team/ann", []byte("{}"))
	empty.MediaType = ocispec.MediaTypeEmptyJSON
	subject := upload(t, reg.Addr, "team/ann", []byte("the subject"))
	subject.MediaType = ocispec.MediaTypeImageManifest
	body, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.note",
		Config: empty, Layers: []ocispec.Descriptor{empty}, Subject: &subject, Annotations: map[string]string{"notes": strings.Repeat("x", 65<<10)}})
	if code, msg := put(t, reg.Addr, "team/ann", digest.FromBytes(body).String(), ocispec.MediaTypeImageManifest, body); code != http.StatusBadRequest || !strings.Contains(msg, "SIZE_INVALID") {
		t.Errorf("PUT of a referrer with 65 KiB of annotations: %d %s, want 400 SIZE_INVALID", code, msg)
	}
	e.oras("attach", reg.Addr+"/team/ann:1", "note.txt", "--artifact-type", "application/vnd.example.note", "--annotation", "notes="+strings.Repeat("x", 60<<10))
}
