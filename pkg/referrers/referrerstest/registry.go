// Package referrerstest starts in-process registries for tests of code
// that lists referrers: distribution v3 as it ships (no Referrers API, so
// clients fall back to the referrers tag schema), or the same with a
// minimal Referrers API in front. Counting what clients ask shows which
// path they took.
package referrerstest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"oras.land/oras-go/v2/registry/remote"
)

// Registry is a running test registry.
type Registry struct {
	// Host is host:port, plain HTTP.
	Host string
	// ReferrersCalls counts GET /v2/<name>/referrers/<digest>, answered or
	// not; TagSchemaReads counts reads of a sha256-<hex> tag (the
	// referrers tag schema).
	ReferrersCalls, TagSchemaReads atomic.Int64

	api  bool
	mu   sync.Mutex
	refs map[string][]ocispec.Descriptor // repository@subject -> referrers
}

// Start runs a registry until the test ends. With referrersAPI it answers
// the Referrers API from the manifests pushed through it and sets
// OCI-Subject on their push, as an OCI 1.1 registry does.
func Start(t testing.TB, referrersAPI bool) *Registry {
	t.Helper()
	logrus.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := &configuration.Configuration{Storage: configuration.Storage{
		"inmemory": configuration.Parameters{},
		"delete":   configuration.Parameters{"enabled": true},
	}}
	cfg.HTTP.Secret = "referrerstest"
	cfg.Log.AccessLog.Disabled = true
	r := &Registry{api: referrersAPI, refs: map[string][]ocispec.Descriptor{}}
	app := handlers.NewApp(ctx, cfg)
	srv := httptest.NewServer(r.wrap(app))
	t.Cleanup(func() { srv.Close(); cancel() })
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Repository is a client of one repository of the registry.
func (r *Registry) Repository(t testing.TB, name string) *remote.Repository {
	t.Helper()
	repo, err := remote.NewRepository(r.Host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	return repo
}

func (r *Registry) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		path := strings.TrimPrefix(req.URL.Path, "/v2/")
		if name, subject, ok := strings.Cut(path, "/referrers/"); ok && req.Method == http.MethodGet {
			r.ReferrersCalls.Add(1)
			if r.api {
				r.serveReferrers(w, name, subject, req.URL.Query().Get("artifactType"))
				return
			}
		}
		if i := strings.LastIndex(path, "/manifests/"); i >= 0 {
			name, ref := path[:i], path[i+len("/manifests/"):]
			if req.Method == http.MethodGet || req.Method == http.MethodHead {
				if strings.HasPrefix(ref, "sha256-") && !strings.Contains(ref, ".") {
					r.TagSchemaReads.Add(1)
				}
			}
			if req.Method == http.MethodPut && r.api {
				body, _ := io.ReadAll(req.Body)
				req.Body = io.NopCloser(bytes.NewReader(body))
				var m ocispec.Manifest
				if json.Unmarshal(body, &m) == nil && m.Subject != nil {
					w.Header().Set("OCI-Subject", m.Subject.Digest.String())
					rec := &recorder{ResponseWriter: w}
					next.ServeHTTP(rec, req)
					if rec.status == http.StatusCreated {
						at := m.ArtifactType
						if at == "" {
							at = m.Config.MediaType
						}
						r.mu.Lock()
						key := name + "@" + m.Subject.Digest.String()
						r.refs[key] = append(r.refs[key], ocispec.Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(body),
							Size: int64(len(body)), ArtifactType: at, Annotations: m.Annotations})
						r.mu.Unlock()
					}
					return
				}
			}
		}
		next.ServeHTTP(w, req)
	})
}

func (r *Registry) serveReferrers(w http.ResponseWriter, name, subject, artifactType string) {
	r.mu.Lock()
	var out []ocispec.Descriptor
	for _, d := range r.refs[name+"@"+subject] {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	r.mu.Unlock()
	if out == nil {
		out = []ocispec.Descriptor{}
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	json.NewEncoder(w).Encode(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: out})
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
