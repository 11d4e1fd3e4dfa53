package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/query"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The model API, version 1, under /v2/_modelreg/v1/ (docs/api.md).
const apiPrefix = "/v2/_modelreg/v1/"

var (
	apiVersionsRE  = regexp.MustCompile(`^models/(` + nameRE + `)/versions$`)
	apiVersionRE   = regexp.MustCompile(`^models/(` + nameRE + `)/versions/([^/]+)$`)
	apiHistoryRE   = regexp.MustCompile(`^models/(` + nameRE + `)/stages/([^/]+)/history$`)
	apiReferrersRE = regexp.MustCompile(`^models/(` + nameRE + `)/referrers/([^/]+)$`)
	apiLineageRE   = regexp.MustCompile(`^models/(` + nameRE + `)/versions/([^/]+)/lineage$`)
)

func writeJSON(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

// writeJSONStatus encodes v before writing anything, so a value that cannot
// be encoded (a NaN from old data) is a 500 naming the problem, never an
// empty 200.
func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	writeJSONAs(w, status, "application/json", v)
}

func writeJSONAs(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(errorBody{Errors: []errorEntry{{Code: "UNKNOWN", Message: "the answer could not be encoded: " + err.Error()}}})
		status, contentType = http.StatusInternalServerError, "application/json"
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// apiError answers 400 for a bad query (with its position), 500 otherwise.
func (rt *router) apiError(w http.ResponseWriter, err error) {
	var qe *query.Error
	if errors.As(err, &qe) {
		pos := qe.Pos
		writeJSONStatus(w, http.StatusBadRequest, errorBody{Errors: []errorEntry{{Code: "QUERY_INVALID", Message: qe.Error(), Position: &pos}}})
		return
	}
	rt.log.Error("model API", "err", err)
	ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func (rt *router) api(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the model API is read-only")
		return
	}
	ctx := r.Context()
	p := strings.TrimPrefix(r.URL.Path, apiPrefix)
	q := r.URL.Query()
	switch {
	case p == "status":
		writeJSON(w, rt.status())
	case p == "models":
		models, err := rt.idx.Models(ctx, q.Get("last"), intParam(r, "n", 100))
		if err != nil {
			rt.apiError(w, err)
			return
		}
		writeJSON(w, map[string]any{"models": models})
	case p == "search":
		n, err := query.Parse(q.Get("q"))
		if err != nil {
			rt.apiError(w, err)
			return
		}
		rows, err := rt.idx.Search(ctx, index.SearchOptions{Query: n, OrderBy: q.Get("order_by"), Limit: intParam(r, "limit", 100), Offset: intParam(r, "offset", 0)})
		if err != nil {
			if !errors.As(err, new(*query.Error)) && strings.HasPrefix(err.Error(), "order_by") {
				err = &query.Error{Pos: 0, Msg: err.Error()}
			}
			rt.apiError(w, err)
			return
		}
		writeJSON(w, map[string]any{"versions": rows})
	case apiVersionsRE.MatchString(p):
		repo := apiVersionsRE.FindStringSubmatch(p)[1]
		rows, err := rt.idx.Search(ctx, index.SearchOptions{Query: query.Cmp{Field: "repository", Op: "=", Vals: []query.Value{{Str: repo}}},
			OrderBy: q.Get("order_by"), Limit: intParam(r, "limit", 100), Offset: intParam(r, "offset", 0)})
		if err != nil {
			rt.apiError(w, err)
			return
		}
		writeJSON(w, map[string]any{"repository": repo, "versions": rows})
	case p == "lineage/descendants":
		of := q.Get("of")
		if of == "" {
			ociError(w, http.StatusBadRequest, "QUERY_INVALID", "of=URI or of=DIGEST is required")
			return
		}
		edges, err := rt.idx.Descendants(ctx, of)
		if err != nil {
			rt.apiError(w, err)
			return
		}
		writeJSON(w, map[string]any{"of": of, "descendants": edges})
	case apiLineageRE.MatchString(p):
		m := apiLineageRE.FindStringSubmatch(p)
		d, err := digest.Parse(m[2])
		if err != nil {
			if d, err = rt.idx.Tag(ctx, m[1], m[2]); err != nil {
				rt.apiError(w, err)
				return
			}
		}
		edges, err := rt.idx.Inputs(ctx, m[1], d)
		if err != nil {
			rt.apiError(w, err)
			return
		}
		writeJSON(w, map[string]any{"repository": m[1], "digest": d, "inputs": edges})
	case apiVersionRE.MatchString(p):
		m := apiVersionRE.FindStringSubmatch(p)
		rt.apiVersion(w, r, m[1], m[2])
	case apiHistoryRE.MatchString(p):
		m := apiHistoryRE.FindStringSubmatch(p)
		records, err := rt.idx.History(ctx, m[1], m[2])
		if err != nil {
			rt.apiError(w, err)
			return
		}
		if at := q.Get("at"); at != "" {
			when, err := time.Parse(time.RFC3339Nano, at)
			if err != nil {
				ociError(w, http.StatusBadRequest, "QUERY_INVALID", "at: expected an RFC 3339 time")
				return
			}
			var inForce json.RawMessage
			for _, rec := range records {
				var t struct{ Time time.Time }
				if json.Unmarshal(rec, &t) == nil && !t.Time.After(when) {
					inForce = rec
					break
				}
			}
			writeJSON(w, map[string]any{"stage": m[2], "at": when, "record": inForce})
			return
		}
		writeJSON(w, map[string]any{"stage": m[2], "records": records})
	case apiReferrersRE.MatchString(p):
		m := apiReferrersRE.FindStringSubmatch(p)
		d, err := digest.Parse(m[2])
		if err != nil {
			ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "not a digest")
			return
		}
		refs, err := rt.idx.Referrers(ctx, m[1], d, "", "", 10000)
		if err != nil {
			rt.apiError(w, err)
			return
		}
		kind := q.Get("kind")
		out := []map[string]any{}
		for _, ref := range refs {
			k := referrerKind(ref)
			if kind == "" || kind == k {
				out = append(out, map[string]any{"kind": k, "descriptor": ref})
			}
		}
		writeJSON(w, map[string]any{"subject": d, "referrers": out})
	default:
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "no such model API route; see docs/api.md")
	}
}

// referrerKind classifies a referrer for people: signature, attestation,
// promotion or other.
func referrerKind(d ocispec.Descriptor) string {
	switch d.ArtifactType {
	case mediatypes.ArtifactTypePromotion:
		return "promotion"
	case mediatypes.ArtifactTypeLineage:
		return "lineage"
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

func (rt *router) apiVersion(w http.ResponseWriter, r *http.Request, repo, ref string) {
	ctx := r.Context()
	d, err := digest.Parse(ref)
	if err != nil {
		if d, err = rt.idx.Tag(ctx, repo, ref); err != nil {
			rt.apiError(w, err)
			return
		}
	}
	if d == "" {
		ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "no version "+ref+" in "+repo)
		return
	}
	rows, err := rt.idx.Search(ctx, index.SearchOptions{Query: query.And{
		L: query.Cmp{Field: "repository", Op: "=", Vals: []query.Value{{Str: repo}}},
		R: query.Cmp{Field: "digest", Op: "=", Vals: []query.Value{{Str: d.String()}}},
	}, Limit: 1})
	if err != nil {
		rt.apiError(w, err)
		return
	}
	if len(rows) == 0 {
		ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", ref+" in "+repo+" is not a model version")
		return
	}
	refs, err := rt.idx.Referrers(ctx, repo, d, "", "", 10000)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	counts := map[string]int{}
	for _, ref := range refs {
		counts[referrerKind(ref)]++
	}
	writeJSON(w, map[string]any{"version": rows[0], "referrers": counts})
}
