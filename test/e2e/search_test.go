package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/index"
)

// modelreg search and the model API answer model questions in one request;
// against a plain registry, search says it needs the server.
func TestSearchAndModelAPI(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)
	for _, m := range []struct{ repo, version, acc, team, created string }{
		{"team/fraud", "1.0.0", "0.81", "fraud", "2026-01-01T00:00:00Z"},
		{"team/fraud", "1.1.0", "0.93", "fraud", "2026-02-01T00:00:00Z"},
		{"team/risk", "2.0.0", "0.95", "risk", "2026-03-01T00:00:00Z"},
		{"lab/toy", "0.1.0", "0.40", "lab", "2026-04-01T00:00:00Z"},
	} {
		dir := filepath.Join(e.dir, m.repo, m.version)
		writeFile(t, filepath.Join(dir, "model.safetensors"), m.repo+m.version, 0o644)
		e.ok("push", reg.Addr+"/"+m.repo+":"+m.version, dir, "--metric", "accuracy="+m.acc, "--label", "team="+m.team, "--created", m.created, "--framework", "pytorch")
	}
	e.ok("promote", reg.Addr+"/team/fraud:1.1.0", "--to", "production", "--reason", "best fraud model")

	out := decode[struct{ Versions []index.VersionRow }](t, e.ok("search", "metrics.accuracy >= 0.9 and repository like 'team/%'", "--registry", reg.Addr, "--order-by", "metrics.accuracy desc", "--output", "json").Stdout)
	var got []string
	for _, v := range out.Versions {
		got = append(got, v.Repository+":"+strings.Join(v.Versions, ","))
	}
	if strings.Join(got, " ") != "team/risk:2.0.0 team/fraud:1.1.0" {
		t.Errorf("search: %v", got)
	}
	text := e.ok("search", "stage = 'production'", "--registry", reg.Addr).Stdout
	if !strings.Contains(text, "team/fraud") || !strings.Contains(text, "production") || !strings.Contains(text, "accuracy=0.93") || strings.Contains(text, "team/risk") {
		t.Errorf("search text:\n%s", text)
	}
	r := e.fails([]string{"position 18", "^"}, "search", "metrics.accuracy >", "--registry", reg.Addr)
	if r.Code != 2 {
		t.Errorf("malformed query exit code %d", r.Code)
	}
	plain := startPlainRegistry(t)
	e.fails([]string{"search needs modelreg serve"}, "search", "stage = 'production'", "--registry", plain.Addr)

	get := func(path string, v any) { t.Helper(); apiGet(t, reg.Addr, path, v) }
	var models struct{ Models []index.ModelRow }
	get("models", &models)
	if len(models.Models) != 3 || models.Models[1].Repository != "team/fraud" || models.Models[1].Versions != 2 || models.Models[1].Stages["production"] == "" {
		t.Errorf("models: %+v", models)
	}
	var one struct {
		Version   index.VersionRow
		Referrers map[string]int
	}
	get("models/team/fraud/versions/production", &one)
	if strings.Join(one.Version.Versions, ",") != "1.1.0" || one.Version.Labels["team"] != "fraud" || one.Referrers["promotion"] != 1 {
		t.Errorf("version: %+v", one)
	}
	var hist struct{ Records []map[string]any }
	get("models/team/fraud/stages/production/history", &hist)
	if len(hist.Records) != 1 || hist.Records[0]["reason"] != "best fraud model" {
		t.Errorf("history: %+v", hist)
	}
	var at struct{ Record map[string]any }
	get("models/team/fraud/stages/production/history?at=2020-01-01T00:00:00Z", &at)
	if at.Record != nil {
		t.Errorf("history at 2020: %+v", at)
	}
	var refs struct{ Referrers []map[string]any }
	get("models/team/fraud/referrers/"+one.Version.Digest+"?kind=promotion", &refs)
	if len(refs.Referrers) != 1 {
		t.Errorf("referrers by kind: %+v", refs)
	}
	resp, _ := http.Get("http://" + reg.Addr + "/v2/_modelreg/v1/search?q=" + "metrics.acc%20%3E")
	if resp.StatusCode != 400 {
		t.Errorf("malformed query over HTTP: %s", resp.Status)
	}
	resp.Body.Close()
}
