package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/audit"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/query"
	"github.com/modelreg/modelreg/pkg/ui"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
)

// isPage says whether a path is one of the web UI's (docs/ui.md): the
// front page, model and version pages, and the stylesheet. The registry's
// own API is under /v2/ and never collides.
func isPage(p string) bool {
	return p == "/" || strings.HasPrefix(p, "/models/") || strings.HasPrefix(p, "/ui/static/") || p == "/ui/events"
}

// page answers a web UI request, from the model API's own answers.
func (rt *router) page(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	moves := strings.HasSuffix(p, "/promote") || strings.HasSuffix(p, "/rollback")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !(moves && r.Method == http.MethodPost) {
		w.Header().Set("Allow", "GET, HEAD")
		if moves {
			w.Header().Set("Allow", "GET, HEAD, POST")
		}
		http.Error(w, "the web UI takes only GET, and POST to move a stage", http.StatusMethodNotAllowed)
		return
	}
	if repo := pageRepo(p); repo != "" && !rt.need(w, r, repo, access.Pull) {
		return
	}
	var page any
	var err error
	switch {
	case strings.HasSuffix(p, "/promote"):
		page, err = rt.movePage(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/models/"), "/promote"), false)
	case strings.HasSuffix(p, "/rollback"):
		page, err = rt.movePage(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/models/"), "/rollback"), true)
	case strings.HasPrefix(p, "/ui/static/"):
		ui.Static().ServeHTTP(w, r)
		return
	case p == "/":
		page, err = rt.modelsPage(r)
	case p == "/ui/events":
		page, err = rt.eventsPage(r)
	case strings.HasSuffix(p, "/audit.md") || strings.HasSuffix(p, "/audit.html") || strings.HasSuffix(p, "/audit.json"):
		rt.auditReport(w, r, strings.TrimPrefix(p[:strings.LastIndex(p, "/audit.")], "/models/"), p[strings.LastIndex(p, ".")+1:])
		return
	case strings.HasSuffix(p, "/compare"):
		page, err = rt.comparePage(r, strings.TrimSuffix(strings.TrimPrefix(p, "/models/"), "/compare"))
	case strings.Contains(p, "/versions/"):
		i := strings.LastIndex(p, "/versions/")
		page, err = rt.versionPage(r, strings.TrimPrefix(p[:i], "/models/"), p[i+len("/versions/"):])
	default:
		page, err = rt.modelPage(r, strings.TrimPrefix(p, "/models/"))
	}
	if err != nil {
		var ae *apiError
		status := http.StatusInternalServerError
		if errors.As(err, &ae) {
			status = ae.code.Descriptor().HTTPStatusCode
		}
		http.Error(w, err.Error(), status)
		return
	}
	var buf bytes.Buffer
	if err := ui.RenderAs(&buf, page, rt.viewer(r)); err != nil {
		rt.log.Error("rendering a page", "path", p, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// No page may be framed or run scripts: the UI has none of its own.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(buf.Bytes())
}

// pageRepo is the repository a page is about ("" for the model list,
// the event log and the stylesheet): the same cuts the page switch makes.
func pageRepo(p string) string {
	rest, ok := strings.CutPrefix(p, "/models/")
	if !ok {
		return ""
	}
	switch {
	case strings.HasSuffix(rest, "/promote"), strings.HasSuffix(rest, "/rollback"), strings.HasSuffix(rest, "/compare"):
		return rest[:strings.LastIndex(rest, "/")]
	case strings.HasSuffix(rest, "/audit.md") || strings.HasSuffix(rest, "/audit.html") || strings.HasSuffix(rest, "/audit.json"):
		return rest[:strings.LastIndex(rest, "/audit.")]
	case strings.Contains(rest, "/versions/"):
		return rest[:strings.LastIndex(rest, "/versions/")]
	}
	return rest
}

func (rt *router) eventsPage(r *http.Request) (any, error) {
	q := r.URL.Query()
	aq := url.Values{"n": {"100"}, "order": {"newest"}, "before": {q.Get("before")}, "repository": {q.Get("repository")}, "type": {q.Get("type")}}
	if aq.Get("before") == "" {
		aq.Del("before")
	}
	v, err := rt.apiEvents(apiRequest{ctx: r.Context(), query: aq})
	if err != nil {
		return nil, err
	}
	return ui.NewEventsPage(v.(wire.Events), q.Get("repository"), q.Get("type")), nil
}

func (rt *router) modelsPage(r *http.Request) (any, error) {
	q := r.URL.Query()
	pg := ui.ModelsPage{Title: "Models", Query: q.Get("q")}
	if pg.Query != "" {
		pg.Title = "Search"
		v, err := rt.apiSearch(apiRequest{ctx: r.Context(), query: url.Values{"q": {pg.Query}, "limit": {"100"}, "order_by": {q.Get("order_by")}}})
		var qe *query.Error
		if errors.As(err, &qe) {
			pg.QueryError, pg.Caret = qe.Error(), ui.Caret(qe.Pos)
			return pg, nil
		}
		if err != nil {
			return nil, err
		}
		pg.Results = ui.NewTable(v.(wire.Versions).Versions, nil)
		return pg, nil
	}
	v, err := rt.apiModels(apiRequest{ctx: r.Context(), query: url.Values{"last": {q.Get("last")}, "n": {"100"}}})
	if err != nil {
		return nil, err
	}
	pg.Models = v.(wire.Models).Models
	if len(pg.Models) == 100 {
		pg.Next = pg.Models[len(pg.Models)-1].Repository
	}
	return pg, nil
}

func (rt *router) modelPage(r *http.Request, repo string) (any, error) {
	if !validRepoName(repo) {
		return nil, &apiError{code: errNameInvalid, msg: "not a repository name: " + repo}
	}
	v, err := rt.apiVersions(apiRequest{ctx: r.Context(), args: []string{repo}, query: url.Values{"limit": {"100"}}})
	if err != nil {
		return nil, err
	}
	rows := v.(wire.Versions).Versions
	var metrics []string
	if m := r.URL.Query().Get("metrics"); m != "" {
		metrics = strings.Split(m, ",")
	}
	metrics = append(metrics, r.URL.Query()["metric"]...)
	pg := ui.ModelPage{Title: repo, Repository: repo, Versions: ui.NewTable(rows, metrics), AllMetrics: ui.NewTable(rows, nil).Metrics}
	// Signatures of each version: bundle and OCI referrers, and a cosign
	// legacy .sig manifest (counted once), as stored; the version page
	// says which keys made them and whether they count.
	pg.Versions.Signatures = map[string]int{}
	for _, row := range rows {
		d, err := digest.Parse(row.Digest)
		if err != nil {
			continue
		}
		refs, err := rt.idx.Referrers(r.Context(), repo, d, "", "", 1000)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, ref := range refs {
			if referrerKind(ref) == "signature" {
				n++
			}
		}
		if t, _ := rt.idx.Tag(r.Context(), repo, "sha256-"+d.Encoded()+".sig"); t != "" {
			n++
		}
		pg.Versions.Signatures[row.Digest] = n
	}
	stages, err := rt.idx.Stages(r.Context(), repo)
	if err != nil {
		return nil, err
	}
	for _, s := range stages {
		h, err := rt.apiHistory(apiRequest{ctx: r.Context(), args: []string{repo, s}, query: url.Values{}})
		if err != nil {
			return nil, err
		}
		pg.History = append(pg.History, h.(wire.History).Records...)
	}
	slices.SortStableFunc(pg.History, func(a, b promotion.Record) int { return b.Time.Compare(a.Time) })
	copiedStages, err := rt.idx.CopiedStages(r.Context(), repo)
	if err != nil {
		return nil, err
	}
	for _, s := range copiedStages {
		c, err := rt.apiCopied(apiRequest{ctx: r.Context(), args: []string{repo, s}, query: url.Values{}})
		if err != nil {
			return nil, err
		}
		if src := c.(wire.CopiedHistory).Sources; len(src) > 0 {
			pg.Copied = append(pg.Copied, ui.CopiedStage{Stage: s, Sources: src})
		}
	}
	pg.MayWrite = MayWrite(r.Context()) && mayWriteRepo(r.Context(), repo)
	pg.Rollbacks = stages
	offer := slices.Clone(stages)
	if pol := rt.gate.policy(); pol != nil {
		for s := range pol.Stages {
			offer = append(offer, s)
		}
	}
	slices.Sort(offer)
	pg.Stages = slices.Compact(offer)
	if len(rows) == 0 && len(pg.History) == 0 {
		return nil, &apiError{code: errNameUnknown, msg: repo + " holds no model versions"}
	}
	return pg, nil
}

func (rt *router) versionPage(r *http.Request, repo, ref string) (any, error) {
	if !validRepoName(repo) {
		return nil, &apiError{code: errNameInvalid, msg: "not a repository name: " + repo}
	}
	req := apiRequest{ctx: r.Context(), args: []string{repo, ref}, query: url.Values{}}
	v, err := rt.apiVersion(req)
	if err != nil {
		return nil, err
	}
	ver := v.(wire.Version)
	pg := ui.VersionPage{Title: repo, Host: r.Host, Version: ver.Version, Referrers: ver.Referrers}
	if l, err := rt.apiLineage(req); err == nil {
		pg.Inputs = l.(wire.Lineage).Inputs
	}
	down, _ := rt.idx.Descendants(r.Context(), ver.Version.Digest)
	label := ver.Version.Repository
	if len(ver.Version.Versions) > 0 {
		label += ":" + ver.Version.Versions[0]
	}
	pg.Graph = ui.Lineage(repo, ver.Version.Digest, label, pg.Inputs, down)
	if iv, err := rt.apiImage(req); err == nil {
		img := iv.(wire.ImageView)
		pg.Image = r.Host + "/" + img.Repository + "@" + img.Digest
	}
	if pg.Files, err = rt.files(r.Context(), repo, ver.Version.Digest); err != nil {
		return nil, err
	}
	pg.Card = rt.card(r.Context(), repo, pg.Files)
	pol := rt.gate.policy()
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(ver.Version.Digest)}
	if ev, err := rt.gate.evidence(r.Context(), pol, repo, subject); err == nil {
		names := map[string]string{}
		if pol != nil {
			for name, k := range pol.Keys {
				names[k.Fingerprint] = name
			}
		}
		for _, f := range ev.Signatures {
			k := names[f.Key]
			if k == "" {
				k = orNone(f.Key)
			}
			pg.Signatures = append(pg.Signatures, ui.Signature{Key: k, Form: string(f.Form), Source: f.Source, Valid: f.Valid, Problem: f.Problem, Time: f.Time})
		}
		pg.Evaluations = ev.Evaluations
	}
	return pg, nil
}

// card renders the version's README or MODEL_CARD, if it has one (raw,
// at the top of the tree), read up to ui.MaxCard bytes.
func (rt *router) card(ctx context.Context, repo string, files []model.FileEntry) template.HTML {
	best, bestRank := -1, 0
	for i, f := range files {
		if rank, ok := ui.CardFile(f.Path); ok && f.Encoding == "raw" && (best < 0 || rank < bestRank) {
			best, bestRank = i, rank
		}
	}
	if best < 0 || rt.views == nil {
		return ""
	}
	rc, err := rt.views.open(ctx, repo, files[best].Descriptor.Digest)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, ui.MaxCard))
	if err != nil {
		return ""
	}
	return ui.Card(b)
}

// files reads a version's files from its manifest in storage.
func (rt *router) files(ctx context.Context, repo, d string) ([]model.FileEntry, error) {
	dg, err := digest.Parse(d)
	if err != nil {
		return nil, err
	}
	mt, payload, ok, err := rt.gate.st.manifest(ctx, repo, dg)
	if err != nil || !ok {
		return nil, err
	}
	v, err := model.Parse(ocispec.Descriptor{MediaType: mt, Digest: dg, Size: int64(len(payload))}, payload)
	if err != nil {
		return nil, nil // shown without files: the index took it, a reader may not
	}
	return v.Files, nil
}

func (rt *router) comparePage(r *http.Request, repo string) (any, error) {
	if !validRepoName(repo) {
		return nil, &apiError{code: errNameInvalid, msg: "not a repository name: " + repo}
	}
	q := r.URL.Query()
	var rows [2]wire.VersionRow
	var files [2][]model.FileEntry
	for i, ref := range []string{q.Get("a"), q.Get("b")} {
		if ref == "" {
			return nil, &apiError{code: errNameInvalid, msg: "compare needs two versions: ?a=TAG-OR-DIGEST&b=TAG-OR-DIGEST"}
		}
		v, err := rt.apiVersion(apiRequest{ctx: r.Context(), args: []string{repo, ref}, query: url.Values{}})
		if err != nil {
			return nil, err
		}
		rows[i] = v.(wire.Version).Version
		if files[i], err = rt.files(r.Context(), repo, rows[i].Digest); err != nil {
			return nil, err
		}
	}
	pg := ui.ComparePage{Title: repo + ": compare", Repository: repo, A: rows[0], B: rows[1]}
	pg.Rows, pg.Files = ui.Compare(rows[0], rows[1], files[0], files[1])
	return pg, nil
}

// auditReport serves a model's compliance report (what `modelreg audit`
// writes) as Markdown, HTML or JSON, to download: its versions, what they
// were made from, their signatures by the policy's keys, evaluations and
// every stage move, checked against the server's record key.
func (rt *router) auditReport(w http.ResponseWriter, r *http.Request, repo, format string) {
	if !validRepoName(repo) {
		http.Error(w, "not a repository name: "+repo, http.StatusBadRequest)
		return
	}
	ref := registry.Reference{Registry: r.Host, Repository: repo} // as users name it; read in-process
	rep, err := audit.Build(r.Context(), rt.gate.repository(repo), ref, "", rt.gate.policy().Trusted(), rt.gate.key.Public())
	if err != nil {
		rt.log.Error("audit report", "repo", repo, "err", err)
		http.Error(w, "the report could not be built: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rep.CheckRevoked(rt.gate.policy(), time.Now())
	for after := int64(0); ; {
		evs, err := rt.idx.Events(r.Context(), index.EventFilter{After: after, Limit: 1000, Repo: repo, Type: wire.EventPromotionRefused})
		if err != nil {
			http.Error(w, "the event log could not be read: "+err.Error(), http.StatusInternalServerError)
			return
		}
		rep.AddRefusals(audit.RefusalsFrom(evs))
		if len(evs) < 1000 {
			break
		}
		after = evs[len(evs)-1].Seq
	}
	var buf bytes.Buffer
	switch format {
	case "md":
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		rep.Markdown(&buf)
	case "html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := rep.HTML(&buf); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	default:
		w.Header().Set("Content-Type", "application/json")
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		buf.Write(append(b, '\n'))
	}
	name := strings.ReplaceAll(repo, "/", "-") + "-audit." + format
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Write(buf.Bytes())
}

// viewer is who the page's header names: the request's user, with a
// sign-in link for anonymous people and a sign-out button for a web
// session when OIDC is on.
func (rt *router) viewer(r *http.Request) ui.Viewer {
	v := ui.Viewer{Name: User(r.Context())}
	if rt.guard == nil || rt.guard.web == nil {
		return v
	}
	if id := identityOf(r.Context()); id != nil && id.session {
		v.LogoutURL = LogoutPath
	}
	if v.Name == "" {
		v.LoginURL = loginURL(r)
	}
	return v
}
