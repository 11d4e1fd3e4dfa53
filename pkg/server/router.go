package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/distribution/reference"
	"github.com/gorilla/mux"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/distribution-spec/specs-go/v1/extensions"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Routes are matched with distribution's own router and name grammar
// (reference.NameRegexp), so a request reaches distribution's manifest
// handler only through the extension's gate: there is no name the two
// read differently.
var (
	distRouter  = v2.Router()
	nameRE      = reference.NameRegexp.String()
	referrersRE = regexp.MustCompile(`^/v2/(` + nameRE + `)/referrers/([^/]+)$`)
	partsRE     = regexp.MustCompile(`^` + apiPrefix + `models/(` + nameRE + `)/uploads(/|$)`)
)

// maxManifest bounds the manifest bodies the router reads, as distribution does.
const maxManifest = 4 << 20

// router is the modelreg extension in front of the distribution handler:
// the Referrers API, OCI-Subject on manifest PUTs, the extension discovery
// endpoint, the gate on every manifest write and delete, and index updates
// in the request that writes storage.
type router struct {
	next    http.Handler
	idx     *index.Index
	gate    *gate
	uploads *uploads
	views   *views
	answers *answers
	events  *dispatcher
	limits  *limits
	log     *slog.Logger
	status  func() Status
	// gc is the online collector: writes that name blobs pass its
	// barrier; nil in tests that build a router without one.
	gc *collector
	// lifecycle applies the retention rules (POST gc).
	lifecycle *lifecycle
	// admin reports whether the request's user may take versions down.
	admin func(*http.Request) bool
	// guard is the access policy's gatekeeper; nil without one.
	guard *guard
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/v2/_oci/ext/discover":
		rt.discover(w, r)
		return
	case isPage(p):
		rt.page(w, r)
		return
	case p == "/metrics":
		if id := identityOf(r.Context()); id != nil && id.subject.Kind == access.KindAnonymous {
			rt.guard.challenge(w, r, "", "metrics need credentials")
			return
		}
		if rt.idx != nil {
			if p, err := rt.idx.Pending(r.Context()); err == nil {
				metricIndexPending.Set(float64(len(p)))
			}
		}
		metricsHandler().ServeHTTP(w, r)
		return
	case p == "/v2/_catalog" && identityOf(r.Context()) != nil:
		rt.filterCatalog(w, r)
		return
	case len(p) >= len(apiPrefix) && p[:len(apiPrefix)] == apiPrefix:
		if m := partsRE.FindStringSubmatch(p); m != nil && !rt.needAny(w, r, m[1], access.Push, access.Sign) {
			return
		}
		if d := r.URL.Query().Get("digest"); r.Method == http.MethodPut && d != "" {
			// An upload in parts completing: a blob write.
			defer rt.barrier(r, digest.Digest(d))()
		}
		if rt.uploads != nil && rt.uploads.serve(w, r) {
			return
		}
		rt.api(w, r)
		return
	}
	if m := referrersRE.FindStringSubmatch(p); m != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		if !validName(w, m[1]) || !rt.need(w, r, m[1], access.Pull) {
			return
		}
		rt.referrers(w, r, m[1], m[2])
		return
	}
	var match mux.RouteMatch
	if distRouter.Match(r, &match) && match.Route != nil && match.Handler == nil {
		name := match.Vars["name"]
		if name != "" && !validName(w, name) {
			return
		}
		if derived := rt.derivedRepo(name); derived != nil {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				model := strings.TrimSuffix(strings.TrimSuffix(name, ModelcarSuffix), ViewSuffix)
				serveError(w, errDenied, fmt.Sprintf("%s is derived from the versions of %s (image views, modelcars): nothing can be written to it; push versions to %s", name, model, model))
				return
			}
			route := ""
			switch match.Route.GetName() {
			case v2.RouteNameManifest:
				route = "manifest"
			case v2.RouteNameBlob:
				route = "blob"
			case v2.RouteNameTags:
				// The model's version and stage tags, which the derived
				// repository serves too (skopeo inspect lists them).
				rt.derivedTags(w, r, name)
				return
			}
			derived(w, r, name, route, match.Vars["reference"]+match.Vars["digest"])
			return
		}
		switch match.Route.GetName() {
		case v2.RouteNameBlob:
			if r.Method == http.MethodHead {
				// An existence check: a push may name this blob next.
				defer rt.barrier(r, digest.Digest(match.Vars["digest"]))()
			}
		case v2.RouteNameBlobUpload, v2.RouteNameBlobUploadChunk:
			if !rt.needAny(w, r, name, access.Push, access.Sign) {
				return
			}
			if q := r.URL.Query(); r.Method == http.MethodPost || r.Method == http.MethodPut {
				// A mount, a monolithic upload or an upload's last chunk.
				defer rt.barrier(r, digest.Digest(q.Get("mount")), digest.Digest(q.Get("digest")))()
			}
		}
		switch match.Route.GetName() {
		case v2.RouteNameManifest:
			switch r.Method {
			case http.MethodPut:
				rt.putManifest(w, r, name, match.Vars["reference"])
				return
			case http.MethodDelete:
				rt.deleteManifest(w, r, name, match.Vars["reference"])
				return
			}
		case v2.RouteNameBlobUpload, v2.RouteNameBlobUploadChunk:
			if (r.Method == http.MethodPost || r.Method == http.MethodPut) && !rt.limits.checkUpload(w, r.Context(), name) {
				return
			}
		case v2.RouteNameBlob:
			if r.Method == http.MethodDelete {
				// A blob may be a record's layer or a protected version's
				// weights: deleting it would erase history or a model
				// behind the gate's back. Space is reclaimed by the collector.
				serveError(w, errUnsupported, "modelreg serve does not delete blobs over the API: a blob may belong to a record or a version; delete the version, then `modelreg gc` reclaims the blobs nothing else names (docs/lifecycle.md)")
				return
			}
		}
	} else if match.Handler != nil && (r.Method == http.MethodPut || r.Method == http.MethodDelete) {
		// A path distribution would redirect (a trailing slash, dots):
		// never a write.
		serveError(w, errNameInvalid, "malformed path: "+p)
		return
	}
	rt.next.ServeHTTP(w, r)
}

// barrier passes the collector's write barrier for a request that may
// name blobs (waiting while a sweep runs) and returns its release, which
// first records the digests named, so the next sweep spares them.
// In-process requests (the server reading itself inside a write that
// holds the barrier already) pass freely.
func (rt *router) barrier(r *http.Request, named ...digest.Digest) func() {
	if rt.gc == nil || inProcess(r) {
		return func() {}
	}
	release := rt.gc.enter()
	return func() {
		rt.gc.touch(named...)
		release()
	}
}

// derivedTags lists a derived repository's tags: its model's version and
// stage tags that point at model versions.
func (rt *router) derivedTags(w http.ResponseWriter, r *http.Request, name string) {
	model := strings.TrimSuffix(strings.TrimSuffix(name, ModelcarSuffix), ViewSuffix)
	tags, err := rt.idx.ModelTags(r.Context(), model)
	if err != nil {
		serveError(w, errUnknown, "the index could not be read")
		return
	}
	if last := r.URL.Query().Get("last"); last != "" {
		i := 0
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && n >= 0 && n < len(tags) {
		tags = tags[:n]
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?n=%d&last=%s>; rel="next"`, name, n, url.QueryEscape(tags[len(tags)-1])))
	}
	writeJSON(w, map[string]any{"name": name, "tags": tags})
}

// derivedRepo returns the handler of a repository derived from a model's
// (its image views, its modelcars), nil for any other name.
func (rt *router) derivedRepo(name string) func(w http.ResponseWriter, r *http.Request, name, route, ref string) {
	switch {
	case rt.views == nil:
		return nil
	case strings.HasSuffix(name, ModelcarSuffix):
		return rt.views.serveModelcar
	case strings.HasSuffix(name, ViewSuffix):
		return rt.views.serve
	}
	return nil
}

// validName answers 400 NAME_INVALID for a repository name distribution
// would refuse (longer than 255 characters): a client error, never a 500.
func validName(w http.ResponseWriter, name string) bool {
	if _, err := reference.WithName(name); err != nil {
		serveError(w, errNameInvalid, fmt.Sprintf("invalid repository name: %v", err))
		return false
	}
	return true
}

// discover lists the extensions this registry serves (OCI extensions spec).
func (rt *router) discover(w http.ResponseWriter, r *http.Request) {
	e := extensions.Extension{
		Name:        "_modelreg",
		URL:         "https://github.com/modelreg/modelreg/blob/main/docs/api.md",
		Description: "modelreg: Referrers API, model index and API, server-enforced promotion gates, uploads in parts",
		Endpoints:   []string{"_modelreg/v1", transfer.PartsEndpoint},
	}
	if rt.uploads == nil || rt.uploads.off != "" {
		e.Description = "modelreg: Referrers API, model index and API, server-enforced promotion gates"
		e.Endpoints = e.Endpoints[:1]
	}
	writeJSON(w, extensions.ExtensionList{Extensions: []extensions.Extension{e}})
}

func (rt *router) referrers(w http.ResponseWriter, r *http.Request, name, ref string) {
	subject, err := digest.Parse(ref)
	if err != nil {
		serveError(w, errDigestInvalid, fmt.Sprintf("%q is not a digest", ref))
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
	// The referrers of an image view (its signatures) are stored in the
	// model's repository: the view repository is derived, never written.
	descs, err := rt.idx.Referrers(r.Context(), strings.TrimSuffix(name, ViewSuffix), subject, artifactType, q.Get("last"), limit)
	if err != nil {
		rt.log.Error("referrers query", "repo", name, "subject", subject, "err", err)
		serveError(w, errUnknown, "the index could not be read")
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
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSONAs(w, http.StatusOK, ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs,
	})
}

// putManifest gates a manifest PUT, forwards it, and indexes it once
// storage has it. A model entering a stage is a recorded move: the
// manifest is stored by digest first (distribution validates it), then the
// server writes the signed record and moves the tag itself.
func (rt *router) putManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	if _, ok := r.URL.Query()["tag"]; ok {
		// The distribution spec's tags-on-push would write tags this
		// handler did not gate; distribution v3.1.2 ignores it, and a later
		// one must not turn it into a side door.
		serveError(w, errUnsupported, "tag query parameters are not supported: PUT the manifest to each tag")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManifest+1))
	if err != nil {
		serveError(w, errManifestInvalid, "reading the manifest: "+err.Error())
		return
	}
	if len(body) > maxManifest {
		serveError(w, errSizeInvalid, fmt.Sprintf("manifest larger than %d bytes", maxManifest))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	defer rt.barrier(r, append(refs(body), digest.FromBytes(body))...)()
	m, derr := index.Describe(name, r.Header.Get("Content-Type"), body)
	if errors.Is(derr, model.ErrMediaTypeMismatch) {
		serveError(w, errManifestInvalid, derr.Error())
		return
	}
	if derr != nil {
		rt.next.ServeHTTP(w, r) // distribution explains what is wrong
		return
	}
	if m.Kind == model.KindModel {
		if _, err := model.Parse(ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size}, body); err != nil {
			serveError(w, errManifestInvalid, "not a valid model version: "+err.Error())
			return
		}
	}
	if m.Subject != "" {
		if err := m.Subject.Validate(); err != nil {
			serveError(w, errManifestInvalid, "subject: "+err.Error())
			return
		}
	}
	if !rt.limits.checkManifest(w, r.Context(), name, m) {
		return
	}
	t := ""
	if _, err := digest.Parse(ref); err != nil {
		if strings.Contains(ref, ":") {
			rt.next.ServeHTTP(w, r) // a malformed digest: distribution says so (400)
			return
		}
		t = ref
	}
	ctx := index.WithActor(r.Context(), rt.gate.actor(r))
	r.Header.Set(headerDigestHint, m.Digest.String())
	if !rt.need(w, r, name, rt.writeRight(r, t, m)) {
		return
	}
	if t != "" {
		unlock, err := rt.gate.lock(ctx, name, t)
		if err != nil {
			rt.log.Error("locking a tag write", "repo", name, "tag", t, "err", err)
			serveError(w, errUnknown, "the index is unavailable")
			return
		}
		defer unlock()
		w2, err := rt.gate.checkTagWrite(ctx, name, t, m)
		if d := (denied{}); errors.As(err, &d) && tag.Classify(t) == tag.Stage {
			rt.refused(ctx, name, t, m.Digest, d.msg, r.Header.Get(mediatypes.HeaderReason))
		}
		if rt.refuse(w, err) {
			return
		}
		if w2.record {
			rt.recordedPut(w, r, name, t, m, w2)
			return
		}
	}
	done, err := rt.idx.Begin(ctx, name)
	if err != nil {
		rt.log.Error("index", "err", err)
		serveError(w, errUnknown, "the index is unavailable")
		return
	}
	sw := &subjectWriter{ResponseWriter: w, subject: m.Subject}
	rt.next.ServeHTTP(sw, r)
	if sw.status != http.StatusCreated {
		done()
		return
	}
	if rt.index(ctx, m, t) {
		done()
	}
}

// index brings the index up to date with a manifest storage now holds.
// On failure the write stays pending (repaired at the next start or by
// `serve --reindex`) and is recorded as a failure on the status endpoint,
// never silently skipped.
func (rt *router) index(ctx context.Context, m index.Manifest, t string) bool {
	err := rt.idx.PutManifest(ctx, m, t)
	if err == nil {
		err = rt.indexRecord(ctx, m)
	}
	if err != nil {
		rt.log.Error("indexing a manifest; it stays pending and is retried", "repo", m.Repo, "digest", m.Digest, "err", err)
		rt.idx.Fail(context.WithoutCancel(ctx), m.Repo, m.Digest, err)
		return false
	}
	if m.Kind == model.KindModel && rt.views != nil {
		rt.views.enqueue(m.Repo, m.Digest)
	}
	return true
}

// recordedPut is a model entering a stage (checked by the gate): store the
// manifest by digest, then make the recorded move.
func (rt *router) recordedPut(w http.ResponseWriter, r *http.Request, name, stage string, m index.Manifest, w2 tagWrite) {
	byDigest := r.Clone(r.Context())
	byDigest.URL.Path = "/v2/" + name + "/manifests/" + m.Digest.String()
	byDigest.URL.RawPath = ""
	byDigest.RequestURI = byDigest.URL.RequestURI()
	byDigest.Body = io.NopCloser(bytes.NewReader(m.Raw))
	stored := newCapture()
	rt.next.ServeHTTP(stored, byDigest)
	if stored.code() != http.StatusCreated {
		stored.replay(w)
		return
	}
	kind := promotion.KindPromotion
	if r.Header.Get(mediatypes.HeaderRollback) == "true" {
		kind = promotion.KindRollback
	}
	if _, err := rt.gate.move(r.Context(), r, name, stage, &m, w2.previous, w2.decision, kind); err != nil {
		rt.log.Error("stage move", "repo", name, "stage", stage, "err", err)
		serveError(w, errUnknown, err.Error())
		return
	}
	if m.Subject != "" {
		stored.header.Set("OCI-Subject", m.Subject.String())
	}
	stored.replay(w)
}

// indexRecord copies a promotion, lineage or tombstone record into the
// index, whoever wrote it: the server's own count, the rest are kept as
// untrusted.
func (rt *router) indexRecord(ctx context.Context, m index.Manifest) error {
	if !isRecord(m.ArtifactType) || m.ArtifactType == mediatypes.ArtifactTypeEvaluation {
		return nil
	}
	layer, ok := onlyLayer(m.Raw)
	if !ok {
		return nil
	}
	body, err := rt.gate.st.blob(ctx, m.Repo, layer.Digest)
	if err != nil {
		return err
	}
	switch m.ArtifactType {
	case mediatypes.ArtifactTypeLineage:
		return rt.idx.PutLineage(ctx, m, body)
	case mediatypes.ArtifactTypePromotion:
		p, err := rt.gate.dec.promotion(m, layer, body)
		if err != nil {
			return nil // not a record anyone can read: a plain manifest
		}
		return rt.idx.PutPromotion(ctx, m, p)
	case mediatypes.ArtifactTypeTombstone:
		rs, err := rt.gate.dec.tombstone(m, layer, body)
		if err != nil {
			return nil
		}
		return rt.idx.Retire(ctx, m.Repo, rs)
	}
	return nil
}

// refused announces a promotion the gate refused (an event, and the log).
func (rt *router) refused(ctx context.Context, repo, stage string, d digest.Digest, why, reason string) {
	rt.log.Warn("stage move refused", "repo", repo, "stage", stage, "digest", d, "actor", index.ActorOf(ctx), "why", why)
	data := wire.EventData{Digest: d.String(), Stage: stage, Reason: why}
	if reason != "" {
		data.Reason = why + " (the client's reason: " + reason + ")"
	}
	if err := rt.idx.Emit(context.WithoutCancel(ctx), wire.EventPromotionRefused, repo, repo+":"+stage, data); err != nil {
		rt.log.Error("recording a refused promotion's event", "err", err)
	}
}

// refuse answers a gate error: 403 DENIED for a refusal, 400 for an
// invalid manifest, 500 otherwise. It reports whether the request was answered.
func (rt *router) refuse(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	var d denied
	var inv invalid
	switch {
	case errors.As(err, &d):
		metricDenials.WithLabelValues("gate", "").Inc()
		serveError(w, errDenied, d.msg)
	case errors.As(err, &inv):
		serveError(w, errManifestInvalid, inv.msg)
	default:
		rt.log.Error("gate", "err", err)
		serveError(w, errUnknown, err.Error())
	}
	return true
}

func (rt *router) deleteManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	rt.deleteAs(w, r, name, ref, false)
}

// deleteAs is a manifest DELETE through the gate: refused, or recorded
// (a removal record for a stage, a tombstone for a version) and then
// handed to distribution. Retention deletes this way too, in process; a
// takedown (the model API's, for admins) records itself as one.
func (rt *router) deleteAs(w http.ResponseWriter, r *http.Request, name, ref string, takedown bool) {
	r.Header.Del(headerDigestHint)
	if !takedown && !rt.need(w, r, name, rt.deleteRight(r, ref)) {
		return
	}
	defer rt.barrier(r)()
	ctx := r.Context()
	_, perr := digest.Parse(ref)
	switch {
	case perr != nil && strings.Contains(ref, ":"):
		rt.next.ServeHTTP(w, r) // a malformed digest: distribution says so (400)
		return
	}
	lock := func() (func(), error) { return rt.gate.lock(ctx, name, ref) }
	if perr == nil {
		lock = func() (func(), error) { return rt.gate.lockRepo(ctx, name) }
	}
	unlock, err := lock()
	if err != nil {
		rt.log.Error("locking a delete", "repo", name, "ref", ref, "err", err)
		serveError(w, errUnknown, "the index is unavailable")
		return
	}
	defer unlock()
	retire, d, err := rt.gate.checkDelete(ctx, name, ref, takedown)
	if rt.refuse(w, err) {
		return
	}
	if tag.Classify(ref) == tag.Stage {
		removed, err := rt.gate.removeStage(ctx, r, name, ref)
		if rt.refuse(w, err) {
			return
		}
		if removed {
			w.WriteHeader(http.StatusAccepted)
			return
		}
	}
	if retire != nil {
		if err := rt.gate.tombstone(ctx, r, name, d, retire, takedown); err != nil {
			rt.refuse(w, err)
			return
		}
	}
	done, err := rt.idx.Begin(ctx, name)
	if err != nil {
		serveError(w, errUnknown, "the index is unavailable")
		return
	}
	defer done()
	sw := &subjectWriter{ResponseWriter: w}
	rt.next.ServeHTTP(sw, r)
	if sw.status != http.StatusAccepted {
		return
	}
	if perr == nil {
		err = rt.idx.DeleteManifest(ctx, name, digest.Digest(ref))
	} else {
		err = rt.idx.DeleteTag(ctx, name, ref)
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
