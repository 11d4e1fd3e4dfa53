package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// run starts a server over dir until the returned stop is called.
var testLog io.Writer = io.Discard

func run(t *testing.T, dir string, reindex bool) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testLog, nil))
	LogDistributionTo(log)
	s, err := New(ctx, Options{Addr: "127.0.0.1:0", DataDir: dir, Reindex: reindex, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	return s.Addr(), func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func repo(t *testing.T, addr, name string) *remote.Repository {
	r, err := remote.NewRepository(addr + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	return r
}

// push stores a small image manifest (optionally with a subject) and returns it.
func push(t *testing.T, r *remote.Repository, tag, artifactType, content string, subject *ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	layer := ocispec.Descriptor{MediaType: "application/vnd.cncf.model.weight.v1.raw", Digest: digest.FromString(content), Size: int64(len(content)),
		Annotations: map[string]string{"org.cncf.model.filepath": "w.bin"}}
	if ok, _ := r.Exists(ctx, layer); !ok {
		if err := r.Push(ctx, layer, bytes.NewReader([]byte(content))); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ocispec.DescriptorEmptyJSON
	if ok, _ := r.Exists(ctx, cfg); !ok {
		r.Push(ctx, cfg, bytes.NewReader(cfg.Data))
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: ocispec.Descriptor{MediaType: cfg.MediaType, Digest: cfg.Digest, Size: cfg.Size}, Layers: []ocispec.Descriptor{layer}, Subject: subject,
		Annotations: map[string]string{"k": content, "io.modelreg.metric.acc": "0.5", "io.modelreg.label.team": "a", "io.modelreg.framework": "onnx"}})
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	var err error
	if tag != "" {
		err = r.PushReference(ctx, d, bytes.NewReader(m), tag)
	} else {
		err = r.Push(ctx, d, bytes.NewReader(m))
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func referrers(t *testing.T, addr, name string, subject digest.Digest, artifactType string) []string {
	t.Helper()
	u := "http://" + addr + "/v2/" + name + "/referrers/" + subject.String()
	if artifactType != "" {
		u += "?artifactType=" + artifactType
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Fatalf("referrers: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if artifactType != "" && resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("filter applied but not announced")
	}
	var idx ocispec.Index
	json.NewDecoder(resp.Body).Decode(&idx)
	var out []string
	for _, d := range idx.Manifests {
		out = append(out, d.ArtifactType+" "+d.Digest.String()+" "+d.Annotations["k"])
	}
	slices.Sort(out)
	return out
}

func dump(t *testing.T, dir string) []string {
	t.Helper()
	idx, err := index.Open(filepath.Join(dir, "modelreg", "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	rows, err := idx.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// fill pushes versions, referrers (one with a subject not pushed yet),
// moves and deletes tags, and deletes a manifest.
func fill(t *testing.T, addr string) digest.Digest {
	a, b := repo(t, addr, "team/a"), repo(t, addr, "team/b")
	v1 := push(t, a, "1.0.0", "application/vnd.cncf.model.manifest.v1+json", "v1", nil)
	v2 := push(t, a, "2.0.0", "application/vnd.cncf.model.manifest.v1+json", "v2", nil)
	push(t, a, "", "application/vnd.example.sig", "sig-1", &v1)
	push(t, a, "", "application/vnd.example.eval", "eval-1", &v1)
	gone := push(t, a, "", "application/vnd.example.eval", "eval-2", &v1)
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("not pushed"), Size: 10}
	push(t, a, "", "application/vnd.example.sig", "early", &missing)
	push(t, b, "latest", "", "image", nil)
	ctx := context.Background()
	st := lineage.New(addr+"/team/a", v2.Digest, lineage.Predicate{Inputs: []lineage.Input{
		{Kind: lineage.KindDataset, URI: "s3://data/train.parquet", Digest: map[string]string{"sha256": strings.Repeat("d", 64)}},
		lineage.ModelInput(addr+"/team/a", v1.Digest),
	}})
	if _, err := lineage.Write(ctx, a, v2, st); err != nil {
		t.Fatal(err)
	}
	if err := a.Tag(ctx, v2, "production"); err != nil {
		t.Fatal(err)
	}
	if err := a.Tag(ctx, v1, "production"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	return v1.Digest
}

func TestReferrersAndReindex(t *testing.T) {
	dir := t.TempDir()
	addr, stop := run(t, dir, false)
	v1 := fill(t, addr)
	got := referrers(t, addr, "team/a", v1, "")
	if len(got) != 3 { // the sig, eval-1, and the record of the move to production (v2's lineage refers to v2)
		t.Fatalf("referrers of v1: %v", got)
	}
	if f := referrers(t, addr, "team/a", v1, "application/vnd.example.eval"); len(f) != 1 || f[0][:29] != "application/vnd.example.eval " {
		t.Errorf("filtered referrers: %v", f)
	}
	if e := referrers(t, addr, "team/a", digest.FromString("nothing"), ""); len(e) != 0 {
		t.Errorf("referrers of an unknown digest: %v", e)
	}
	if early := referrers(t, addr, "team/a", digest.FromString("not pushed"), ""); len(early) != 1 {
		t.Errorf("referrer of a subject not pushed yet: %v", early)
	}
	stop()
	live := dump(t, dir)
	for _, kind := range []string{"vm", "p", "l"} {
		if !slices.ContainsFunc(live, func(r string) bool { return strings.HasPrefix(r, kind+" team/a ") }) {
			t.Fatalf("the live index has no %q rows: %v", kind, live)
		}
	}

	addr, stop = run(t, dir, true)
	if again := referrers(t, addr, "team/a", v1, ""); !slices.Equal(again, got) {
		t.Errorf("after --reindex referrers are %v, want %v", again, got)
	}
	stop()
	if rebuilt := dump(t, dir); !slices.Equal(rebuilt, live) {
		t.Errorf("rebuilt index differs:\nlive:    %v\nrebuilt: %v", live, rebuilt)
	}
}

// A crash between the storage write and the index write leaves a pending
// mark; the next start repairs that repository from storage.
func TestCrashRepair(t *testing.T) {
	dir := t.TempDir()
	addr, stop := run(t, dir, false)
	fill(t, addr)
	stop()
	want := dump(t, dir)

	// What a crash leaves: storage has team/a, the index lost it, and the
	// write was marked pending.
	idx, err := index.Open(filepath.Join(dir, "modelreg", "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := idx.ReplaceRepo(ctx, "team/a", index.Content{}); err != nil {
		t.Fatal(err)
	}
	if _, err := idx.Begin(ctx, "team/a"); err != nil {
		t.Fatal(err)
	}
	idx.Close()

	_, stop = run(t, dir, false)
	stop()
	if got := dump(t, dir); !slices.Equal(got, want) {
		t.Errorf("after repair:\n got %v\nwant %v", got, want)
	}
}

// Referrers come in pages with a Link to the next one.
func TestReferrersPaging(t *testing.T) {
	addr, stop := run(t, t.TempDir(), false)
	defer stop()
	r := repo(t, addr, "team/paged")
	subject := push(t, r, "1.0.0", "application/vnd.example", "subject", nil)
	want := map[string]bool{}
	for i := range 5 {
		d := push(t, r, "", "application/vnd.example.eval", fmt.Sprint("eval-", i), &subject)
		want[d.Digest.String()] = true
	}
	got := map[string]bool{}
	next := "/v2/team/paged/referrers/" + subject.Digest.String() + "?n=2"
	pages := 0
	for next != "" {
		resp, err := http.Get("http://" + addr + next)
		if err != nil {
			t.Fatal(err)
		}
		var idx ocispec.Index
		json.NewDecoder(resp.Body).Decode(&idx)
		resp.Body.Close()
		pages++
		for _, d := range idx.Manifests {
			if got[d.Digest.String()] {
				t.Errorf("%s listed twice", d.Digest)
			}
			got[d.Digest.String()] = true
		}
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(strings.Split(link, ";")[0], "<"), ">")
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if pages != 3 || len(got) != 5 {
		t.Errorf("%d pages, %d referrers; want 3 pages of 5", pages, len(got))
	}
	for d := range want {
		if !got[d] {
			t.Errorf("%s missing", d)
		}
	}
}
