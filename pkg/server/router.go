package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Routes the extension owns; everything else goes to distribution as is.
var (
	nameRE      = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*`
	referrersRE = regexp.MustCompile(`^/v2/(` + nameRE + `)/referrers/([^/]+)$`)
	manifestRE  = regexp.MustCompile(`^/v2/(` + nameRE + `)/manifests/([^/]+)$`)
)

// maxManifest bounds the manifest bodies the router reads, as distribution does.
const maxManifest = 4 << 20

// router is the modelreg extension in front of the distribution handler:
// the Referrers API, OCI-Subject on manifest PUTs, the extension discovery
// endpoint, and index updates in the request that writes storage.
type router struct {
	next http.Handler
	idx  *index.Index
	gate *gate
	log  *slog.Logger
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/v2/_oci/ext/discover" {
		rt.discover(w, r)
		return
	}
	if strings.HasPrefix(p, apiPrefix) {
		rt.api(w, r)
		return
	}
	if m := referrersRE.FindStringSubmatch(p); m != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		rt.referrers(w, r, m[1], m[2])
		return
	}
	if m := manifestRE.FindStringSubmatch(p); m != nil {
		switch r.Method {
		case http.MethodPut:
			rt.putManifest(w, r, m[1], m[2])
			return
		case http.MethodDelete:
			rt.deleteManifest(w, r, m[1], m[2])
			return
		}
	}
	rt.next.ServeHTTP(w, r)
}

// ociError writes an error body in the distribution-spec format.
func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// discover lists the extensions this registry serves (OCI extensions spec).
func (rt *router) discover(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"extensions": []map[string]any{{
		"name":        "_modelreg",
		"url":         "https://github.com/modelreg/modelreg/blob/main/docs/api.md",
		"description": "modelreg: Referrers API, model index and API, server-enforced promotion gates",
		"endpoints":   []string{"_modelreg/v1"},
	}}})
}

func (rt *router) referrers(w http.ResponseWriter, r *http.Request, name, ref string) {
	subject, err := digest.Parse(ref)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("%q is not a digest", ref))
		return
	}
	q := r.URL.Query()
	limit := 1000
	if n := q.Get("n"); n != "" {
		if v, err := strconv.Atoi(n); err == nil && v > 0 && v <= 10000 {
			limit = v
		}
	}
	artifactType := q.Get("artifactType")
	descs, err := rt.idx.Referrers(r.Context(), name, subject, artifactType, q.Get("last"), limit)
	if err != nil {
		rt.log.Error("referrers query", "repo", name, "subject", subject, "err", err)
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "the index could not be read")
		return
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if len(descs) == limit {
		next := url.Values{"n": {strconv.Itoa(limit)}, "last": {descs[len(descs)-1].Digest.String()}}
		if artifactType != "" {
			next.Set("artifactType", artifactType)
		}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	body, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs,
	})
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// putManifest forwards a manifest PUT and indexes it once storage has it.
func (rt *router) putManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManifest+1))
	if err != nil {
		ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "reading the manifest: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	m, derr := index.Describe(name, r.Header.Get("Content-Type"), body)
	if derr != nil || len(body) > maxManifest {
		rt.next.ServeHTTP(w, r) // distribution explains what is wrong
		return
	}
	tag := ""
	if _, err := digest.Parse(ref); err != nil {
		tag = ref
	}
	var record func() (undo func(), err error)
	if tag != "" {
		defer rt.gate.lock(name, tag)()
		previous, mustRecord, decision, err := rt.gate.checkTagWrite(r.Context(), name, tag, m)
		if rt.refuse(w, err) {
			return
		}
		if mustRecord {
			record = func() (func(), error) { return rt.gate.record(r.Context(), r, name, tag, m, previous, decision) }
		}
	}
	done, err := rt.idx.Begin(r.Context(), name)
	if err != nil {
		rt.log.Error("index", "err", err)
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "the index is unavailable")
		return
	}
	defer done()
	// The record is written before the tag moves: a move without its
	// record must never be visible. A failed move takes its record back.
	var undo func()
	if record != nil {
		if undo, err = record(); err != nil {
			rt.log.Error("writing a promotion record", "repo", name, "stage", tag, "err", err)
			ociError(w, http.StatusInternalServerError, "UNKNOWN", "the promotion record could not be written; the stage did not move")
			return
		}
	}
	sw := &subjectWriter{ResponseWriter: w, subject: m.Subject}
	rt.next.ServeHTTP(sw, r)
	if sw.status != http.StatusCreated {
		if undo != nil {
			undo()
		}
		return
	}
	if err := rt.idx.PutManifest(r.Context(), m, tag); err != nil {
		rt.log.Error("indexing a manifest", "repo", name, "digest", m.Digest, "err", err)
	}
	if m.ArtifactType == mediatypes.ArtifactTypePromotion || m.ArtifactType == mediatypes.ArtifactTypeLineage {
		rt.indexRecord(r.Context(), name, m)
	}
}

// indexRecord copies a promotion or lineage record into the index, whoever
// wrote it (the server's gate, modelreg, or a plain `oras attach`).
func (rt *router) indexRecord(ctx context.Context, name string, m index.Manifest) {
	layer, ok := onlyLayer(m.Raw)
	if !ok {
		return
	}
	body, err := content.FetchAll(ctx, rt.gate.repository(name).Blobs(), layer)
	if err == nil {
		err = rt.idx.PutRecord(ctx, m, body)
	}
	if err != nil {
		rt.log.Error("indexing a record", "repo", name, "record", m.Digest, "err", err)
	}
}

// refuse answers a gate error: 403 DENIED for a refusal, 500 otherwise.
// It reports whether the request was answered.
func (rt *router) refuse(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	var d denied
	if errors.As(err, &d) {
		ociError(w, http.StatusForbidden, "DENIED", d.msg)
		return true
	}
	rt.log.Error("gate", "err", err)
	ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
	return true
}

func (rt *router) deleteManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	defer rt.gate.lock(name, ref)()
	if rt.refuse(w, rt.gate.checkDelete(r.Context(), name, ref)) {
		return
	}
	done, err := rt.idx.Begin(r.Context(), name)
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "the index is unavailable")
		return
	}
	defer done()
	sw := &subjectWriter{ResponseWriter: w}
	rt.next.ServeHTTP(sw, r)
	if sw.status != http.StatusAccepted {
		return
	}
	if d, err := digest.Parse(ref); err == nil {
		err = rt.idx.DeleteManifest(r.Context(), name, d)
	} else {
		err = rt.idx.DeleteTag(r.Context(), name, ref)
	}
	if err != nil {
		rt.log.Error("indexing a delete", "repo", name, "ref", ref, "err", err)
	}
}

// subjectWriter records the status and, on a created manifest that has a
// subject, announces that this registry indexed it (OCI-Subject), so clients
// do not maintain the referrers tag schema.
type subjectWriter struct {
	http.ResponseWriter
	subject digest.Digest
	status  int
}

func (w *subjectWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		if code == http.StatusCreated && w.subject != "" {
			w.Header().Set("OCI-Subject", w.subject.String())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *subjectWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *subjectWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
