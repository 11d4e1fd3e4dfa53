package audit

import (
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

func inputs(v Version) []string {
	var out []string
	for _, s := range v.Lineage {
		status := "unsigned record"
		switch {
		case s.Kind == "attestation" && s.Signed:
			status = "signed by " + s.Key
		case s.Kind == "attestation":
			status = "attestation, not verified: " + s.Problem
		case s.Problem != "":
			status = "rejected: " + s.Problem
		}
		for _, in := range s.Predicate.Inputs {
			line := in.Kind + " " + in.URI
			if in.Revision != "" {
				line += " @" + in.Revision
			}
			if h := in.Digest["sha256"]; h != "" {
				line += " (sha256:" + h + ")"
			}
			out = append(out, line+" — "+status)
		}
		if s.Predicate.Run != nil {
			out = append(out, "run "+strings.TrimSpace(s.Predicate.Run.ID+" "+s.Predicate.Run.URL)+" — "+status)
		}
	}
	return out
}

func metrics(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+strconv.FormatFloat(m[k], 'g', -1, 64))
	}
	return strings.Join(parts, ", ")
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// Markdown writes the report as Markdown.
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "# Compliance report: %s\n\nGenerated %s. Signatures checked against %d trusted key(s).\n", r.Repository, r.Generated.Format(time.RFC3339), len(r.KeysTrusted))
	r.markdownRevoked(w)
	r.markdownRefused(w)
	for _, v := range r.Versions {
		fmt.Fprintf(w, "\n## %s (%s)\n\n", strings.Join(v.Tags, ", "), v.Digest)
		if !v.Metadata.Created.IsZero() {
			fmt.Fprintf(w, "- Created: %s\n", v.Metadata.Created.Format(time.RFC3339))
		}
		if v.Metadata.Framework != "" {
			fmt.Fprintf(w, "- Framework: %s\n", v.Metadata.Framework)
		}
		if len(v.Metadata.Metrics) > 0 {
			fmt.Fprintf(w, "- Metrics at push: %s\n", metrics(v.Metadata.Metrics))
		}
		fmt.Fprintf(w, "\n### Inputs\n\n")
		ins := inputs(v)
		if len(ins) == 0 {
			fmt.Fprintln(w, "No lineage recorded.")
		}
		for _, in := range ins {
			fmt.Fprintf(w, "- %s\n", in)
		}
		fmt.Fprintf(w, "\n### Evaluations\n\n")
		if len(v.Evaluations) == 0 {
			fmt.Fprintln(w, "None.")
		}
		for _, e := range v.Evaluations {
			line := fmt.Sprintf("- %s by %s: %s", e.Time.Format(time.RFC3339), e.Actor, metrics(e.Metrics))
			if e.Dataset != "" {
				line += " on " + e.Dataset
			}
			if e.Problem != "" {
				line += " (rejected: " + e.Problem + ")"
			}
			fmt.Fprintln(w, line)
		}
		fmt.Fprintf(w, "\n### Signatures\n\n")
		if len(v.Signatures) == 0 {
			fmt.Fprintln(w, "None.")
		}
		for _, s := range v.Signatures {
			who := s.Key
			if who == "" {
				who = "unverified"
				if s.Claimed != "" {
					who += " (claims " + s.Claimed + ")"
				}
			}
			line := fmt.Sprintf("- %s signature, key %s", s.Form, who)
			if s.Problem != "" {
				line += ": " + s.Problem
			}
			fmt.Fprintln(w, line)
		}
		fmt.Fprintf(w, "\n### Stages\n\n")
		if len(v.Stages) == 0 {
			fmt.Fprintln(w, "Never in a stage.")
		} else {
			fmt.Fprintln(w, "| time | stage | event | actor | reason | rollback |\n| --- | --- | --- | --- | --- | --- |")
		}
		for _, e := range v.Stages {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %v |\n", e.Time.Format(time.RFC3339), e.Stage, e.Event, e.Actor, strings.ReplaceAll(e.Reason, "|", "\\|"), e.Rollback)
		}
	}
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"inputs": inputs, "metrics": metrics, "short": short, "join": strings.Join,
	"time": func(t time.Time) string { return t.Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Compliance report: {{.Repository}}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-top:1px solid #ccc;padding-top:1em}h3{font-size:1em;margin-bottom:.3em}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code{font-size:.9em}.bad{color:#a00}
</style></head><body>
<h1>Compliance report: {{.Repository}}</h1>
<p>Generated {{time .Generated}}. Signatures checked against {{len .KeysTrusted}} trusted key(s).</p>
{{with .Flagged}}<h2 class="bad">Stage heads resting on a revoked key</h2>
<table><tr><th>stage</th><th>version</th><th>promoted</th><th>revoked keys</th><th>still meets the policy</th><th>why</th></tr>
{{range .}}<tr class="bad"><td>{{.Stage}}</td><td><code>{{short .Digest}}</code></td><td>{{time .RecordTime}}</td><td>{{range .RevokedKeys}}{{.Name}} (since {{time .Since}}) {{end}}</td><td>{{.Satisfied}}</td><td>{{.Why}}</td></tr>{{end}}</table>{{end}}
{{with .Refused}}<h2>Refused stage moves</h2>
<table><tr><th>time</th><th>stage</th><th>version</th><th>actor</th><th>why</th></tr>
{{range .}}<tr><td>{{time .Time}}</td><td>{{.Stage}}</td><td><code>{{short .Digest}}</code></td><td>{{.Actor}}</td><td>{{.Reason}}</td></tr>{{end}}</table>{{end}}
{{range .Versions}}
<h2>{{join .Tags ", "}} <code>{{.Digest}}</code></h2>
<p>{{if not .Metadata.Created.IsZero}}Created {{time .Metadata.Created}}. {{end}}{{with .Metadata.Framework}}Framework {{.}}. {{end}}{{with metrics .Metadata.Metrics}}Metrics at push: {{.}}.{{end}}</p>
<h3>Inputs</h3>
{{with inputs .}}<ul>{{range .}}<li>{{.}}</li>{{end}}</ul>{{else}}<p>No lineage recorded.</p>{{end}}
<h3>Evaluations</h3>
{{if .Evaluations}}<table><tr><th>time</th><th>by</th><th>metrics</th><th>dataset</th></tr>
{{range .Evaluations}}<tr{{if .Problem}} class="bad"{{end}}><td>{{time .Time}}</td><td>{{.Actor}}</td><td>{{metrics .Metrics}}{{with .Problem}} (rejected: {{.}}){{end}}</td><td>{{.Dataset}}</td></tr>{{end}}</table>
{{else}}<p>None.</p>{{end}}
<h3>Signatures</h3>
{{if .Signatures}}<table><tr><th>form</th><th>key</th><th>valid</th><th>problem</th></tr>
{{range .Signatures}}<tr{{if not .Valid}} class="bad"{{end}}><td>{{.Form}}</td><td><code>{{if .Key}}{{.Key}}{{else}}{{.Claimed}}{{end}}</code></td><td>{{.Valid}}</td><td>{{.Problem}}</td></tr>{{end}}</table>
{{else}}<p>None.</p>{{end}}
<h3>Stages</h3>
{{if .Stages}}<table><tr><th>time</th><th>stage</th><th>event</th><th>actor</th><th>reason</th><th>rollback</th></tr>
{{range .Stages}}<tr><td>{{time .Time}}</td><td>{{.Stage}}</td><td>{{.Event}}</td><td>{{.Actor}}</td><td>{{.Reason}}</td><td>{{.Rollback}}</td></tr>{{end}}</table>
{{else}}<p>Never in a stage.</p>{{end}}
{{end}}
</body></html>
`))

// HTML writes the report as one self-contained HTML page (no external
// resources), escaped by html/template.
func (r *Report) HTML(w io.Writer) error { return page.Execute(w, r) }
