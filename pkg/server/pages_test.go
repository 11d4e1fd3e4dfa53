package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

func getPage(t *testing.T, u string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// The read-only pages show what the API shows, escape what pushers wrote
// (a <script> in an annotation is text), point at a query's error, refuse
// writes, and forbid scripts and framing.
func TestPages(t *testing.T) {
	addr, stop := run(t, t.TempDir(), false)
	defer stop()
	a := repo(t, addr, "team/ui")
	ctx := context.Background()
	v := pushModel(t, a, "1.0.0", map[string]string{"w.bin": "w"},
		map[string]string{"io.modelreg.metric.acc": "0.5", "io.modelreg.label.team": "a", "io.modelreg.label.note": "<script>alert(1)</script>"})
	pushModel(t, a, "2.0.0", map[string]string{"w.bin": "w2", "tok.json": "{}",
		"README.md": "# Fraud model\n\n<script>alert(2)</script>\n\n[docs](javascript:alert(3)) and [site](https://example.com)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"},
		map[string]string{"io.modelreg.metric.acc": "0.7", "io.modelreg.label.team": "a"})
	if err := a.Tag(ctx, v, "staging"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	status, h, body := getPage(t, base+"/")
	if status != 200 || !strings.Contains(body, `href="/models/team/ui"`) || !strings.Contains(body, ">staging<") {
		t.Errorf("models page: %d\n%s", status, body)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	_, _, body = getPage(t, base+"/?q="+url.QueryEscape("metrics.acc >"))
	if !strings.Contains(body, "position 13") || !strings.Contains(body, "\n             ^</pre>") {
		t.Errorf("search error page:\n%s", body)
	}
	_, _, body = getPage(t, base+"/?q="+url.QueryEscape("labels.team = 'a'"))
	if !strings.Contains(body, `href="/models/team/ui/versions/`+v.Digest.String()+`"`) || !strings.Contains(body, "<th scope=\"col\">acc</th>") {
		t.Errorf("search results page:\n%s", body)
	}
	status, _, body = getPage(t, base+"/models/team/ui/versions/1.0.0")
	if status != 200 || strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("version page (%d) does not escape the annotation:\n%s", status, body)
	}
	if !strings.Contains(body, "modelreg pull "+addr+"/team/ui@"+v.Digest.String()) || !strings.Contains(body, addr+"/team/ui/image@sha256:") {
		t.Errorf("version page lacks the pull commands:\n%s", body)
	}
	status, _, body = getPage(t, base+"/models/team/ui")
	if status != 200 || !strings.Contains(body, "<td>staging</td>") {
		t.Errorf("model page (%d) lacks the stage history:\n%s", status, body)
	}
	// Metric columns chosen on the page.
	pushModel(t, a, "3.0.0", map[string]string{"w.bin": "w3"}, map[string]string{"io.modelreg.metric.acc": "0.8", "io.modelreg.metric.f1": "0.6"})
	if _, _, body := getPage(t, base+"/models/team/ui?metric=f1"); !strings.Contains(body, `<th scope="col">f1</th>`) || strings.Contains(body, `<th scope="col">acc</th>`) ||
		!strings.Contains(body, `value="f1" checked`) {
		t.Errorf("choosing the metric columns:\n%s", body)
	}
	if status, _, _ := getPage(t, base+"/models/team/none"); status != http.StatusNotFound {
		t.Errorf("an unknown model: %d", status)
	}
	if status, _, body := getPage(t, base+"/ui/static/style.css"); status != 200 || !strings.Contains(body, ".badge") {
		t.Errorf("stylesheet: %d", status)
	}
	if _, _, body := getPage(t, base+"/models/team/ui/versions/1.0.0"); !strings.Contains(body, "<td>w.bin</td><td>weight</td><td>0644</td>") {
		t.Errorf("version page lacks its files")
	}
	_, _, card := getPage(t, base+"/models/team/ui/versions/2.0.0")
	for _, want := range []string{"<h1>Fraud model</h1>", `<a href="https://example.com" rel="nofollow">site</a>`, "<td>1</td>"} {
		if !strings.Contains(card, want) {
			t.Errorf("the model card lacks %q", want)
		}
	}
	for _, bad := range []string{"alert(2)", "javascript:"} {
		if strings.Contains(card, bad) {
			t.Errorf("the model card kept %q:\n%s", bad, card)
		}
	}
	_, _, body = getPage(t, base+"/models/team/ui/compare?a=1.0.0&b=2.0.0")
	for _, want := range []string{`<tr class="differs"><th scope="row">metrics.acc</th><td>0.5</td><td>0.7</td>`, `<th scope="row">tok.json</th>`, "<td>added</td>", "<td>changed</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("compare page lacks %q:\n%s", want, body)
		}
	}
	resp, err := http.Post(base+"/models/team/ui", "application/x-www-form-urlencoded", strings.NewReader("x=1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to a page: %d", resp.StatusCode)
	}
}

// pushModel stores a model version with files (path to content) and
// manifest annotations.
func pushModel(t *testing.T, a *remote.Repository, tag string, files, annotations map[string]string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	var layers []ocispec.Descriptor
	for _, p := range slices.Sorted(maps.Keys(files)) {
		l := ocispec.Descriptor{MediaType: "application/vnd.cncf.model.weight.v1.raw", Digest: digest.FromString(files[p]), Size: int64(len(files[p])),
			Annotations: map[string]string{"org.cncf.model.filepath": p}}
		if ok, _ := a.Exists(ctx, l); !ok {
			if err := a.Push(ctx, l, strings.NewReader(files[p])); err != nil {
				t.Fatal(err)
			}
		}
		layers = append(layers, l)
	}
	if ok, _ := a.Exists(ctx, ocispec.DescriptorEmptyJSON); !ok {
		a.Push(ctx, ocispec.DescriptorEmptyJSON, strings.NewReader("{}"))
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.cncf.model.manifest.v1+json",
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: ocispec.DescriptorEmptyJSON.Digest, Size: 2}, Layers: layers, Annotations: annotations})
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	if err := a.PushReference(ctx, d, bytes.NewReader(m), tag); err != nil {
		t.Fatal(err)
	}
	return d
}

// The version page draws the lineage: inputs on the left, linked; the
// base model's page draws this version among what was made from it.
func TestPageLineage(t *testing.T) {
	addr, stop := run(t, t.TempDir(), false)
	defer stop()
	a := repo(t, addr, "team/ln")
	ctx := context.Background()
	base := pushModel(t, a, "1.0.0", map[string]string{"w.bin": "base"}, nil)
	tuned := pushModel(t, a, "2.0.0", map[string]string{"w.bin": "tuned"}, nil)
	st := lineage.New(addr+"/team/ln", tuned.Digest, lineage.Predicate{Inputs: []lineage.Input{
		{Kind: lineage.KindDataset, URI: "s3://data/train.parquet", Digest: map[string]string{"sha256": strings.Repeat("d", 64)}},
		lineage.ModelInput(addr+"/team/ln", base.Digest),
	}})
	if _, err := lineage.Write(ctx, a, tuned, st); err != nil {
		t.Fatal(err)
	}
	_, _, page := getPage(t, "http://"+addr+"/models/team/ln/versions/2.0.0")
	for _, want := range []string{"<svg", `href="/models/team/ln/versions/` + base.Digest.String() + `"`, "s3://data/train.parquet", ">dataset<", ">this version<"} {
		if !strings.Contains(page, want) {
			t.Errorf("the tuned version's lineage lacks %q:\n%s", want, page)
		}
	}
	_, _, page = getPage(t, "http://"+addr+"/models/team/ln/versions/1.0.0")
	if !strings.Contains(page, ">made from it<") || !strings.Contains(page, `href="/models/team/ln/versions/`+tuned.Digest.String()+`"`) {
		t.Errorf("the base version's page does not show what was made from it:\n%s", page)
	}
}
