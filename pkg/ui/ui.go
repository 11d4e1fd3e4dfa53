// Package ui renders modelreg serve's web pages: server-side, with
// html/template (every value escaped by context), an embedded stylesheet
// and no JavaScript, so the pages work with no network and under the same
// auth as the API. The server hands it the model API's own answers (pkg/wire
// types): a page shows exactly what `modelreg` and the API show.
package ui

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/modelreg/modelreg/pkg/evaluation"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/wire"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pages holds one template set per page: the layout, the shared "versions"
// table and the page's own "content".
var pages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"short": func(d string) string {
			if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
				return hex[:12]
			}
			return d
		},
		"size":      progress.Size,
		"clip":      Clip,
		"inputRepo": InputRepo,
		"metric": func(r wire.VersionRow, name string) string {
			if v, ok := r.Metrics[name]; ok {
				return strconv.FormatFloat(v, 'g', 6, 64)
			}
			return ""
		},
	}
	out := map[string]*template.Template{}
	for _, p := range []string{"models", "model", "version", "compare", "move", "events"} {
		out[p] = template.Must(template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/versions.html", "templates/"+p+".html"))
	}
	return out
}()

// Static serves the embedded stylesheet under /ui/static/.
func Static() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	return http.StripPrefix("/ui/static/", http.FileServer(http.FS(sub)))
}

// Table is a table of version rows with the metric columns to show.
type Table struct {
	Rows    []wire.VersionRow
	Metrics []string
	// Signatures, when set, counts each row's signatures (by digest).
	Signatures map[string]int
}

// NewTable picks the metric columns: those asked for, else every metric
// the rows have, sorted.
func NewTable(rows []wire.VersionRow, metrics []string) Table {
	if len(metrics) == 0 {
		seen := map[string]bool{}
		for _, r := range rows {
			for k := range r.Metrics {
				if !seen[k] {
					seen[k] = true
					metrics = append(metrics, k)
				}
			}
		}
		slices.Sort(metrics)
	}
	return Table{Rows: rows, Metrics: metrics}
}

// ModelsPage is the front page: the models, or a search's results.
type ModelsPage struct {
	Title, Query string
	Viewer       Viewer
	// QueryError and Caret show where a query failed to parse.
	QueryError, Caret string
	Models            []wire.ModelRow
	Next              string
	Results           Table
}

// ModelPage is one model: its versions and every stage's history.
type ModelPage struct {
	Title, Query string
	Viewer       Viewer
	Repository   string
	Versions     Table
	History      []promotion.Record
	// Copied are the histories of its stages at other registries (records
	// copied with its versions): shown apart, never as its history.
	Copied []CopiedStage
	// Stages are the stages to offer a promotion to (the policy's and
	// those with a history); Rollbacks those with a history.
	Stages, Rollbacks []string
	MayWrite          bool
	// AllMetrics are the metrics the versions have, for choosing columns.
	AllMetrics []string
}

// CopiedStage is one stage's histories at other registries, per source.
type CopiedStage struct {
	Stage   string
	Sources []promotion.Copied
}

// Shown says whether the metric m is one of the table's columns.
func (p ModelPage) Shown(m string) bool { return slices.Contains(p.Versions.Metrics, m) }

// VersionPage is one version.
type VersionPage struct {
	Title, Query string
	Viewer       Viewer
	Host         string
	Version      wire.VersionRow
	Referrers    map[string]int
	Inputs       []wire.Edge
	Graph        *Graph
	Image        string
	Files        []model.FileEntry
	// Card is the README or MODEL_CARD, rendered and sanitized (Card).
	Card template.HTML
	// Signatures and Evaluations are what the trust policy's keys find.
	Signatures  []Signature
	Evaluations []evaluation.Record
}

// Signature is one signature as a page shows it: the policy's name for
// the key that verified it, the form, where it is, and why it does not
// count when it does not.
type Signature struct {
	Key, Form, Source, Problem, Time string
	Valid                            bool
}

// MovePage confirms a promotion or a rollback: what the stage holds and
// will hold, and what the trust policy says, before the click; or, after
// it, what happened (Done, Refused).
type MovePage struct {
	Title, Query       string
	Viewer             Viewer
	Repository, Stage  string
	Rollback           bool
	Current            string
	Target             wire.VersionRow
	Protected, Allowed bool
	Approvers, Missing []string
	MayWrite           bool
	CSRF               string
	Done               string
	Refused            bool
}

// ComparePage sets two versions side by side: metrics and params with
// their differences, and the files added, removed and changed.
type ComparePage struct {
	Title, Query string
	Viewer       Viewer
	Repository   string
	A, B         wire.VersionRow
	Rows         []CompareRow
	Files        []CompareRow
}

// CompareRow is one field (or file) of a comparison.
type CompareRow struct {
	Name, A, B string
	Differs    bool
}

// Compare builds the rows of a comparison of a and b, files included.
func Compare(a, b wire.VersionRow, fa, fb []model.FileEntry) (rows, files []CompareRow) {
	add := func(name, x, y string) {
		rows = append(rows, CompareRow{Name: name, A: x, B: y, Differs: x != y})
	}
	add("created", a.Created, b.Created)
	add("framework", a.Framework, b.Framework)
	for _, k := range unionKeys(a.Metrics, b.Metrics) {
		add("metrics."+k, num(a.Metrics, k), num(b.Metrics, k))
	}
	for _, k := range unionKeys(a.Params, b.Params) {
		add("params."+k, a.Params[k], b.Params[k])
	}
	for _, k := range unionKeys(a.Labels, b.Labels) {
		add("labels."+k, a.Labels[k], b.Labels[k])
	}
	byPath := func(fs []model.FileEntry) map[string]string {
		m := map[string]string{}
		for _, f := range fs {
			m[f.Path] = f.Descriptor.Digest.String()
		}
		return m
	}
	pa, pb := byPath(fa), byPath(fb)
	for _, p := range unionKeys(pa, pb) {
		files = append(files, CompareRow{Name: p, A: pa[p], B: pb[p], Differs: pa[p] != pb[p]})
	}
	return rows, files
}

func num(m map[string]float64, k string) string {
	if v, ok := m[k]; ok {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return ""
}

func unionKeys[V any](a, b map[string]V) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Viewer is who looks at a page, for its header: the signed-in user, and
// where to sign in or out, so a person sees under which name a click
// moves a stage.
type Viewer struct {
	// Name is the user's name ("" when anonymous).
	Name string
	// LoginURL, when set, is where an anonymous viewer signs in (OIDC).
	LoginURL string
	// LogoutURL, when set, ends the viewer's web session (a form posts
	// there).
	LogoutURL string
}

// RenderAs writes page (one of the types above) as HTML, its header
// naming the viewer.
func RenderAs(w io.Writer, page any, v Viewer) error {
	switch p := page.(type) {
	case ModelsPage:
		p.Viewer = v
		page = p
	case ModelPage:
		p.Viewer = v
		page = p
	case VersionPage:
		p.Viewer = v
		page = p
	case ComparePage:
		p.Viewer = v
		page = p
	case MovePage:
		p.Viewer = v
		page = p
	case EventsPage:
		p.Viewer = v
		page = p
	}
	return Render(w, page)
}

// Render writes page (one of the types above) as HTML.
func Render(w io.Writer, page any) error {
	name := ""
	switch page.(type) {
	case ModelsPage:
		name = "models"
	case ModelPage:
		name = "model"
	case VersionPage:
		name = "version"
	case ComparePage:
		name = "compare"
	case MovePage:
		name = "move"
	case EventsPage:
		name = "events"
	default:
		return fmt.Errorf("ui: no page for %T", page)
	}
	return pages[name].ExecuteTemplate(w, "layout", page)
}

// Caret is a line with a caret under byte pos of a query, for an error.
func Caret(pos int) string {
	return strings.Repeat(" ", max(pos, 0)) + "^"
}
