package server

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/query"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The model API, version 1, under /v2/_modelreg/v1/ (docs/api.md).
const apiPrefix = wire.Prefix

// apiRequest is one model API request: the path's captures and the query.
type apiRequest struct {
	ctx   context.Context
	args  []string
	query url.Values
}

// apiRoute is one route of the model API: a pattern (relative to the
// prefix; names in distribution's grammar) and a handler returning the
// typed answer (a wire type) or an error.
type apiRoute struct {
	pattern *regexp.Regexp
	handle  func(rt *router, r apiRequest) (any, error)
	// cached routes read nothing but the index: their answers are kept
	// until the next index write (answers).
	cached bool
	// named routes are about one repository (the first capture): reading
	// them needs pull on it.
	named bool
}

func route(pattern string, h func(rt *router, r apiRequest) (any, error)) apiRoute {
	p := strings.ReplaceAll(pattern, "{name}", "("+nameRE+")")
	p = strings.ReplaceAll(p, "{ref}", "([^/]+)")
	return apiRoute{pattern: regexp.MustCompile("^" + p + "$"), handle: h, named: strings.HasPrefix(pattern, "models/{name}")}
}

// indexRoute is a route whose answer depends on the index alone.
func indexRoute(pattern string, h func(rt *router, r apiRequest) (any, error)) apiRoute {
	rte := route(pattern, h)
	rte.cached = true
	return rte
}

// apiRoutes are declared once, most specific first.
var apiRoutes = []apiRoute{
	route(`status`, (*router).apiStatus),
	route(`events`, (*router).apiEvents),
	route(`events/deliveries`, (*router).apiDeliveries),
	indexRoute(`models`, (*router).apiModels),
	indexRoute(`search`, (*router).apiSearch),
	route(`lineage/descendants`, (*router).apiDescendants),
	indexRoute(`models/{name}/versions`, (*router).apiVersions),
	route(`models/{name}/versions/{ref}/lineage`, (*router).apiLineage),
	route(`models/{name}/versions/{ref}/image`, (*router).apiImage),
	route(`models/{name}/versions/{ref}/modelcar`, (*router).apiModelcar),
	route(`models/{name}/versions/{ref}`, (*router).apiVersion),
	route(`models/{name}/stages/{ref}/history`, (*router).apiHistory),
	route(`models/{name}/stages/{ref}/copied`, (*router).apiCopied),
	route(`models/{name}/referrers/{ref}`, (*router).apiReferrers),
}

// apiError is a model API answer other than 200.
type apiError struct {
	code   errcode.ErrorCode
	msg    string
	detail any
}

func (e *apiError) Error() string { return e.msg }

func badQuery(msg string, pos int) error {
	return &apiError{code: errQueryInvalid, msg: msg, detail: wire.QueryDetail{Position: pos}}
}

// apiWrite is one of the model API's few writes (POST): the
// authenticator lets only users who may write reach them.
type apiWrite struct {
	pattern *regexp.Regexp
	handle  func(rt *router, w http.ResponseWriter, r *http.Request, args []string)
}

var apiWrites = []apiWrite{
	{route(`gc`, nil).pattern, (*router).apiGC},
	{route(`models/{name}/versions/{ref}/takedown`, nil).pattern, (*router).apiTakedown},
}

func (rt *router) api(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, apiPrefix)
	if m := robotsRE.FindStringSubmatch(p); m != nil {
		rt.robots(w, r, m[1])
		return
	}
	if m := retryRE.FindStringSubmatch(p); m != nil && r.Method == http.MethodPost {
		rt.retryDelivery(w, r, m[1])
		return
	}
	if r.Method == http.MethodPost && rt.lifecycle != nil {
		for _, rte := range apiWrites {
			if m := rte.pattern.FindStringSubmatch(p); m != nil {
				rte.handle(rt, w, r, m[1:])
				return
			}
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		serveError(w, errUnsupported, "the model API is read-only but for POST events/deliveries/{id}/retry, POST gc and POST models/REPO/versions/REF/takedown (docs/api.md)")
		return
	}
	for _, rte := range apiRoutes {
		m := rte.pattern.FindStringSubmatch(p)
		if m == nil {
			continue
		}
		if rte.named && !rt.need(w, r, m[1], access.Pull) {
			return
		}
		if rte.cached && rt.answers != nil {
			gen := rt.idx.Generation() // before the query: see answers
			rt.answers.serve(w, r, answerKey(r.Context()), gen, func(ctx context.Context) (any, error) {
				return rte.handle(rt, apiRequest{ctx: ctx, args: m[1:], query: r.URL.Query()})
			}, func(err error) { rt.apiError(w, err) })
			return
		}
		v, err := rte.handle(rt, apiRequest{ctx: r.Context(), args: m[1:], query: r.URL.Query()})
		if err != nil {
			rt.apiError(w, err)
			return
		}
		writeJSON(w, v)
		return
	}
	serveError(w, errNameUnknown, "no such model API route; see docs/api.md")
}

// apiError answers a handler's error: its own code, QUERY_INVALID with
// the position for a query that does not parse, 500 otherwise.
func (rt *router) apiError(w http.ResponseWriter, err error) {
	var ae *apiError
	var qe *query.Error
	switch {
	case errors.As(err, &ae):
		if ae.detail != nil {
			serveError(w, ae.code, ae.msg, ae.detail)
		} else {
			serveError(w, ae.code, ae.msg)
		}
	case errors.As(err, &qe):
		serveError(w, errQueryInvalid, qe.Error(), wire.QueryDetail{Position: qe.Pos})
	default:
		rt.log.Error("model API", "err", err)
		serveError(w, errUnknown, err.Error())
	}
}

func writeJSON(w http.ResponseWriter, v any) { writeJSONAs(w, http.StatusOK, "application/json", v) }

// writeJSONAs encodes v before writing anything, so a value that cannot
// be encoded is a 500 naming the problem, never an empty 200.
func writeJSONAs(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := encodeJSON(v)
	if err != nil {
		serveError(w, errUnknown, err.Error())
		return
	}
	writeEncoded(w, status, contentType, b)
}

// encodeJSON is an answer's body: JSON and a newline.
func encodeJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("the answer could not be encoded: %w", err)
	}
	return append(b, '\n'), nil
}

func writeEncoded(w http.ResponseWriter, status int, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func intParam(q url.Values, name string, def int) int {
	if v, err := strconv.Atoi(q.Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func (rt *router) apiStatus(r apiRequest) (any, error) { return rt.status(), nil }

func (rt *router) apiModels(r apiRequest) (any, error) {
	models, err := readableModels(r.ctx, func(last string, n int) ([]wire.ModelRow, error) { return rt.idx.Models(r.ctx, last, n) },
		r.query.Get("last"), intParam(r.query, "n", 100))
	return wire.Models{Models: models}, err
}

func (rt *router) apiSearch(r apiRequest) (any, error) {
	n, err := query.Parse(r.query.Get("q"))
	if err != nil {
		return nil, err
	}
	rows, err := readableVersions(r.ctx, func(offset, limit int) ([]wire.VersionRow, error) {
		return rt.idx.Search(r.ctx, index.SearchOptions{Query: n, OrderBy: r.query.Get("order_by"), Limit: limit, Offset: offset})
	}, intParam(r.query, "offset", 0), intParam(r.query, "limit", 100))
	return wire.Versions{Versions: rows}, err
}

func (rt *router) apiVersions(r apiRequest) (any, error) {
	repo := r.args[0]
	rows, err := rt.idx.Search(r.ctx, index.SearchOptions{Query: query.Cmp{Field: "repository", Op: "=", Vals: []query.Value{{Str: repo}}},
		OrderBy: r.query.Get("order_by"), Limit: intParam(r.query, "limit", 100), Offset: intParam(r.query, "offset", 0)})
	return wire.Versions{Repository: repo, Versions: rows}, err
}

func (rt *router) apiDescendants(r apiRequest) (any, error) {
	of := r.query.Get("of")
	if of == "" {
		return nil, badQuery("of=URI or of=DIGEST is required", 0)
	}
	edges, err := rt.idx.Descendants(r.ctx, of)
	kept := []index.Edge{}
	for _, e := range edges {
		if readable(r.ctx, e.Repo) {
			kept = append(kept, e)
		}
	}
	return wire.Descendants{Of: of, Descendants: kept}, err
}

// resolve reads REF (a digest or a tag) of a repository from the index.
func (rt *router) resolve(ctx context.Context, repo, ref string) (digest.Digest, error) {
	if d, err := digest.Parse(ref); err == nil {
		return d, nil
	}
	d, err := rt.idx.Tag(ctx, repo, ref)
	if err == nil && d == "" {
		return "", &apiError{code: errManifestUnknown, msg: "no version " + ref + " in " + repo}
	}
	return d, err
}

func (rt *router) apiLineage(r apiRequest) (any, error) {
	d, err := rt.resolve(r.ctx, r.args[0], r.args[1])
	if err != nil {
		return nil, err
	}
	edges, err := rt.idx.Inputs(r.ctx, r.args[0], d)
	return wire.Lineage{Repository: r.args[0], Digest: d, Inputs: edges}, err
}

func (rt *router) apiVersion(r apiRequest) (any, error) {
	repo, ref := r.args[0], r.args[1]
	d, err := rt.resolve(r.ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	rows, err := rt.idx.Search(r.ctx, index.SearchOptions{Query: query.And{
		L: query.Cmp{Field: "repository", Op: "=", Vals: []query.Value{{Str: repo}}},
		R: query.Cmp{Field: "digest", Op: "=", Vals: []query.Value{{Str: d.String()}}},
	}, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, &apiError{code: errManifestUnknown, msg: ref + " in " + repo + " is not a model version"}
	}
	refs, err := rt.idx.Referrers(r.ctx, repo, d, "", "", 10000)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, ref := range refs {
		counts[referrerKind(ref)]++
	}
	return wire.Version{Version: rows[0], Referrers: counts}, nil
}

// apiImage answers the image view of a version (built, and its tar
// digests computed, when it was not yet).
func (rt *router) apiImage(r apiRequest) (any, error) {
	repo, ref := r.args[0], r.args[1]
	d, err := rt.resolve(r.ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	v, err := rt.views.build(r.ctx, repo, d)
	if errors.Is(err, errNotView) {
		return nil, &apiError{code: errManifestUnknown, msg: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	return wire.ImageView{Repository: repo + ViewSuffix, Digest: v.Descriptor.Digest.String(), Version: d.String()}, nil
}

// apiModelcar answers the modelcar of a version: the operator's base
// image with the version's files at /models.
func (rt *router) apiModelcar(r apiRequest) (any, error) {
	repo, ref := r.args[0], r.args[1]
	d, err := rt.resolve(r.ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	mc, err := rt.views.buildModelcar(r.ctx, repo, d)
	if errors.Is(err, errNotView) {
		return nil, &apiError{code: errManifestUnknown, msg: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	return wire.ImageView{Repository: repo + ModelcarSuffix, Digest: mc.manifest.Descriptor.Digest.String(), Version: d.String(), Base: rt.views.base.String()}, nil
}

func (rt *router) apiHistory(r apiRequest) (any, error) {
	stage := r.args[1]
	bodies, err := rt.idx.History(r.ctx, r.args[0], stage)
	if err != nil {
		return nil, err
	}
	records := make([]promotion.Record, 0, len(bodies))
	for _, b := range bodies {
		var rec promotion.Record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, err
		}
		records = append(records, rec)
	}
	at := r.query.Get("at")
	if at == "" {
		return wire.History{Stage: stage, Records: records}, nil
	}
	when, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return nil, badQuery("at: expected an RFC 3339 time", 0)
	}
	out := wire.HistoryAt{Stage: stage, At: when}
	if rec := promotion.At(records, when); rec != nil && rec.Digest != "" {
		out.Record = rec
	}
	return out, nil
}

// apiCopied answers the histories of a stage at other registries: the
// stage's records this registry did not sign into its chain, each read
// from storage and checked against the keys the policy lists under
// registries: (and this registry's own key, for a record copied between
// two of its repositories). They are never part of apiHistory.
func (rt *router) apiCopied(r apiRequest) (any, error) {
	repo, stage := r.args[0], r.args[1]
	records, err := rt.idx.UntrustedOf(r.ctx, repo, stage)
	if err != nil {
		return nil, err
	}
	keys := map[string]ed25519.PublicKey{promotion.ThisRegistry: rt.gate.key.Public()}
	for name, k := range rt.gate.policy().RegistryKeys() {
		keys[name] = k.Key
	}
	var found []promotion.Examined
	for _, rec := range records {
		d, err := digest.Parse(rec)
		if err != nil {
			continue
		}
		_, raw, ok, err := rt.gate.st.manifest(r.ctx, repo, d)
		if err != nil {
			return nil, err
		}
		layer, lok := onlyLayer(raw)
		if !ok || !lok {
			continue // gone from storage since it was indexed
		}
		blob, err := rt.gate.st.blob(r.ctx, repo, layer.Digest)
		if err != nil {
			return nil, err
		}
		e, err := promotion.Examine(layer.MediaType, blob, keys)
		if err != nil {
			continue // indexed as a record, but its body says otherwise
		}
		e.Record.Record = rec
		found = append(found, e)
	}
	return wire.CopiedHistory{Stage: stage, Sources: promotion.Group(found)}, nil
}

func (rt *router) apiReferrers(r apiRequest) (any, error) {
	d, err := digest.Parse(r.args[1])
	if err != nil {
		return nil, &apiError{code: errDigestInvalid, msg: r.args[1] + " is not a digest"}
	}
	refs, err := rt.idx.Referrers(r.ctx, r.args[0], d, "", "", 10000)
	if err != nil {
		return nil, err
	}
	kind := r.query.Get("kind")
	out := wire.Referrers{Subject: d, Referrers: []wire.Referrer{}}
	for _, ref := range refs {
		if k := referrerKind(ref); kind == "" || kind == k {
			out.Referrers = append(out.Referrers, wire.Referrer{Kind: k, Descriptor: ref})
		}
	}
	return out, nil
}

// referrerKind classifies a referrer for people.
func referrerKind(d ocispec.Descriptor) string {
	switch d.ArtifactType {
	case mediatypes.ArtifactTypePromotion:
		return "promotion"
	case mediatypes.ArtifactTypeLineage:
		return "lineage"
	case mediatypes.ArtifactTypeEvaluation:
		return "evaluation"
	case mediatypes.ArtifactTypeTombstone:
		return "tombstone"
	case mediatypes.ArtifactTypeCosignSignature:
		return "signature"
	case mediatypes.SigstoreBundle:
		if pt := d.Annotations[mediatypes.AnnotationBundlePredicateType]; pt != "" && pt != mediatypes.PredicateCosignSign {
			return "attestation"
		}
		return "signature"
	}
	return "other"
}
