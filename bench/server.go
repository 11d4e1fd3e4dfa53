package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelreg/modelreg/pkg/server"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// overheadSuite pushes and pulls one 2 GiB file through modelreg serve and
// through the bare embedded distribution handler, alternating.
func overheadSuite(c config) map[string]any {
	dir := filepath.Join(c.work, "blob")
	size := writeRandom(filepath.Join(dir, "model.safetensors"), 4*c.shardMiB<<20, 42)
	defer os.RemoveAll(dir)
	full, stopFull := serve(c.modelreg, filepath.Join(c.work, "data-full"))
	defer stopFull()
	bare, stopBare := serveArgs(c.modelreg, filepath.Join(c.work, "data-bare"), "--bare")
	defer stopBare()
	env := append(os.Environ(), "HOME="+c.work, "DOCKER_CONFIG="+filepath.Join(c.work, ".docker"))
	results := map[string]*result{}
	for round := range c.rounds {
		for _, s := range []struct{ name, addr string }{{"modelreg serve", full}, {"bare distribution", bare}} {
			ref := fmt.Sprintf("%s/bench/blob-%d:1.0.0", s.addr, round)
			add(results, "push to "+s.name, run(env, c.work, c.modelreg, "push", "--no-cache", ref, dir))
			dst := filepath.Join(c.work, "pulled")
			add(results, "pull from "+s.name, run(env, c.work, c.modelreg, "pull", ref, "-o", dst))
			check(os.RemoveAll(dst))
		}
		fmt.Printf("round %d done\n", round+1)
	}
	names := []string{"push to modelreg serve", "push to bare distribution", "pull from modelreg serve", "pull from bare distribution"}
	report(results, size, names)
	ratios := map[string]float64{
		"push: modelreg serve / bare": ratio(results, "push to modelreg serve", "push to bare distribution"),
		"pull: modelreg serve / bare": ratio(results, "pull from modelreg serve", "pull from bare distribution"),
	}
	printRatios(ratios)
	return map[string]any{"bytes": size, "results": results, "ratios": ratios}
}

// indexSuite fills an index with 100,000 versions in 1,000 models and
// measures the model API over HTTP against an in-process server.
func indexSuite(c config) map[string]any {
	const models, perModel = 1000, 100 // as fillIndex writes
	dir := filepath.Join(c.work, "data-index")
	start := time.Now()
	fillIndex(dir)
	fmt.Printf("indexed %d versions in %d models in %s\n", models*perModel, models, time.Since(start).Round(time.Second))

	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	server.LogDistributionTo(quiet)
	s, err := server.New(sctx, server.Options{Addr: "127.0.0.1:0", DataDir: dir, Logger: quiet})
	check(err)
	go s.Serve(sctx)
	base := "http://" + s.Addr() + "/v2/_modelreg/v1/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	queries := []struct{ name, path string }{
		{"search accuracy>=0.9 and production, by accuracy", "search?" + url.Values{"q": {"metrics.accuracy >= 0.9 and stage = 'production'"}, "order_by": {"metrics.accuracy desc"}, "limit": {"100"}}.Encode()},
		{"search team label and framework", "search?" + url.Values{"q": {"labels.team = 'team-07' and framework = 'pytorch'"}, "limit": {"100"}}.Encode()},
		{"search repository like, newest first", "search?" + url.Values{"q": {"repository like 'team-3%' and metrics.f1 > 0.5"}, "limit": {"50"}}.Encode()},
		{"list versions of one model", "models/team-07/model-0507/versions?limit=100"},
		{"list models", "models?n=100"},
	}
	out := map[string]any{}
	defer func() { out["pages"] = pagesTimings(client, "http://"+s.Addr()) }()
	fmt.Printf("\n%-50s %8s %8s %8s\n", "request", "p50 ms", "p99 ms", "rows")
	for _, q := range queries {
		var lat []float64
		rows := 0
		for i := range 300 {
			body, ms := getUncached(client, base+q.path, i, q.name)
			if i >= 20 { // the first requests warm the page cache
				lat = append(lat, ms)
			}
			var v map[string][]json.RawMessage
			json.Unmarshal(body, &v)
			rows = len(v["versions"]) + len(v["models"])
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		fmt.Printf("%-50s %8.2f %8.2f %8d\n", q.name, p50, p99, rows)
		out[q.name] = map[string]any{"p50ms": p50, "p99ms": p99, "rows": rows}
	}
	return out
}

// referrersSuite lists the 1,000 referrers of one subject through the
// Referrers API of modelreg serve and through the referrers tag schema on
// plain distribution, with oras-go in both cases.
func referrersSuite(c config) map[string]any {
	full, stopFull := serve(c.modelreg, filepath.Join(c.work, "data-referrers"))
	defer stopFull()
	plain, stopPlain := startDistribution(c, filepath.Join(c.work, "data-plain"))
	defer stopPlain()
	out := map[string]any{}
	results := map[string]*result{}
	for _, s := range []struct{ name, addr string }{{"Referrers API (modelreg serve)", full}, {"tag schema (plain distribution)", plain}} {
		repo, err := remote.NewRepository(s.addr + "/bench/referrers")
		check(err)
		repo.PlainHTTP = true
		ctx := context.Background()
		subject := pushManifest(ctx, repo, "application/vnd.example.subject", nil, "subject")
		t0 := time.Now()
		for i := range 1000 {
			pushManifest(ctx, repo, "application/vnd.example.eval", &subject, fmt.Sprint("referrer ", i))
		}
		fmt.Printf("%s: wrote 1000 referrers in %s\n", s.name, time.Since(t0).Round(time.Millisecond))
		for range 20 {
			fresh, _ := remote.NewRepository(s.addr + "/bench/referrers")
			fresh.PlainHTTP = true
			t := time.Now()
			n := 0
			check(fresh.Referrers(ctx, subject, "", func(page []ocispec.Descriptor) error { n += len(page); return nil }))
			if n != 1000 {
				fail(fmt.Sprintf("%s listed %d referrers", s.name, n))
			}
			add(results, s.name, sample{Seconds: time.Since(t).Seconds()})
		}
	}
	fmt.Printf("\n%-34s %10s\n", "listing 1000 referrers", "median ms")
	for _, n := range []string{"Referrers API (modelreg serve)", "tag schema (plain distribution)"} {
		var secs []float64
		for _, s := range results[n].Samples {
			secs = append(secs, s.Seconds)
		}
		slices.Sort(secs)
		results[n].Median = secs[len(secs)/2]
		fmt.Printf("%-34s %10.2f\n", n, results[n].Median*1000)
		out[n] = map[string]any{"medianMs": results[n].Median * 1000}
	}
	return out
}

func pushManifest(ctx context.Context, repo *remote.Repository, artifactType string, subject *ocispec.Descriptor, content string) ocispec.Descriptor {
	cfg := ocispec.DescriptorEmptyJSON
	if ok, _ := repo.Exists(ctx, cfg); !ok {
		check(repo.Push(ctx, cfg, bytes.NewReader(cfg.Data)))
	}
	var sub *ocispec.Descriptor
	if subject != nil {
		sub = &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: ocispec.Descriptor{MediaType: cfg.MediaType, Digest: cfg.Digest, Size: cfg.Size}, Layers: []ocispec.Descriptor{},
		Subject: sub, Annotations: map[string]string{"content": content}})
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType, Digest: digest.FromBytes(m), Size: int64(len(m))}
	check(repo.Push(ctx, d, bytes.NewReader(m)))
	return d
}

func startDistribution(c config, data string) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(c.work, "distribution.yml")
	check(os.WriteFile(cfg, fmt.Appendf(nil, "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", data, addr), 0o644))
	cmd := exec.Command(c.distribution, "serve", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return addr, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
		}
	}
	fail("plain distribution did not start")
	return "", nil
}

func mustDir(d string) string {
	check(os.MkdirAll(d, 0o755))
	return d
}

// pagesTimings times the web UI's pages over the same index (each request
// a miss of the answer cache, by an ignored parameter), 100 times each.
func pagesTimings(client *http.Client, base string) map[string]any {
	pages := []struct{ name, path string }{
		{"page: models", "/"},
		{"page: search", "/?" + url.Values{"q": {"metrics.accuracy >= 0.9 and stage = 'production'"}}.Encode()},
		{"page: model (100 versions, history)", "/models/team-07/model-0507"},
		{"page: version", "/models/team-07/model-0507/versions/1.50.0"},
		{"page: compare", "/models/team-07/model-0507/compare?a=1.50.0&b=1.51.0"},
	}
	out := map[string]any{}
	fmt.Printf("\n%-50s %8s %8s\n", "web UI page (server time)", "p50 ms", "p99 ms")
	for _, p := range pages {
		var lat []float64
		for i := range 120 {
			_, ms := getUncached(client, base+p.path, i, p.name)
			if i >= 20 {
				lat = append(lat, ms)
			}
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		fmt.Printf("%-50s %8.2f %8.2f\n", p.name, p50, p99)
		out[p.name] = map[string]any{"p50ms": p50, "p99ms": p99}
	}
	return out
}

// getUncached GETs url with a parameter the server ignores (uncached=i),
// so each request misses the answer cache and times the work itself; it
// returns the body and the milliseconds taken, and stops the bench on an
// answer other than 200.
func getUncached(client *http.Client, url string, i int, name string) ([]byte, float64) {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	t0 := time.Now()
	resp, err := client.Get(url + sep + "uncached=" + strconv.Itoa(i))
	check(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ms := float64(time.Since(t0).Microseconds()) / 1000
	if resp.StatusCode != 200 {
		fail(name + ": " + resp.Status + " " + string(body))
	}
	return body, ms
}
