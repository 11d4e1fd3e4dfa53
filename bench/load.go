package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// Load suite bounds: 200 closed-loop clients, each making at most
// loadRequests requests and stopping at loadDeadline, whichever comes
// first, so a slow server makes a short run, never a long one.
const (
	loadClients  = 200
	loadRequests = 20
	loadDeadline = 20 * time.Second
)

// loadSuite runs modelreg serve (the binary, as users do) over an index of
// 100,000 versions in 1,000 models, and 200 concurrent clients, each with
// its own connection pool, issuing manifest GETs, searches and model lists;
// then manifest GETs alone, on modelreg serve and on plain distribution;
// then 32 concurrent pulls of a 256 MiB model (concurrentPulls) on both.
// -load-pulls-only runs the pulls alone, on a server with an empty index.
// MODELREG_BENCH_PPROF=127.0.0.1:PORT serves pprof from the server.
func loadSuite(c config) map[string]any {
	dir := filepath.Join(c.work, "data-load")
	if *loadPullsOnly {
		addr, stop := serve(c.modelreg, dir)
		defer stop()
		plain, stopPlain := startDistribution(c, filepath.Join(c.work, "data-load-plain"))
		defer stopPlain()
		return map[string]any{"concurrent pulls": concurrentPulls(c, addr, plain)}
	}
	start := time.Now()
	// MODELREG_BENCH_INDEX=FILE keeps the filled index in FILE and reuses
	// it on the next run (filling takes most of the suite's time).
	keep := os.Getenv("MODELREG_BENCH_INDEX")
	db := filepath.Join(mustDir(filepath.Join(dir, "modelreg")), "index.db")
	if _, err := os.Stat(keep); keep != "" && err == nil {
		copyFile(keep, db)
		fmt.Printf("index of 100000 versions in 1000 models copied from %s\n", keep)
	} else {
		fillIndex(dir)
		fmt.Printf("indexed 100000 versions in 1000 models in %s\n", time.Since(start).Round(time.Second))
		if keep != "" {
			copyFile(db, keep)
		}
	}
	var extra []string
	if p := os.Getenv("MODELREG_BENCH_PPROF"); p != "" {
		extra = append(extra, "--pprof-addr", p)
		fmt.Printf("pprof on http://%s/debug/pprof/\n", p)
	}
	addr, stop := serveArgs(c.modelreg, dir, extra...)
	defer stop()
	plain, stopPlain := startDistribution(c, filepath.Join(c.work, "data-load-plain"))
	defer stopPlain()

	// The same 50 manifests (10 repositories, 5 version tags) in both.
	var manifests []string
	for _, a := range []string{addr, plain} {
		manifests = pushLoadManifests(a)
	}

	search := []string{
		"search?" + url.Values{"q": {"metrics.accuracy >= 0.9 and stage = 'production'"}, "order_by": {"metrics.accuracy desc"}, "limit": {"100"}}.Encode(),
		"search?" + url.Values{"q": {"labels.team = 'team-07' and framework = 'pytorch'"}, "limit": {"100"}}.Encode(),
		"search?" + url.Values{"q": {"repository like 'team-3%' and metrics.f1 > 0.5"}, "limit": {"50"}}.Encode(),
	}
	api := "/v2/_modelreg/v1/"
	mixed := func(client, i int) (string, string) {
		n := client*loadRequests + i + client
		switch n % 4 {
		case 0:
			return "manifest GET", manifests[n%len(manifests)]
		case 1:
			return "search", api + search[(n/4)%len(search)]
		case 2:
			return "model list", api + "models?n=100"
		}
		return "versions of a model", api + fmt.Sprintf("models/team-%02d/model-%04d/versions?limit=100", (n/4)%50, (n/4)%1000)
	}
	onlySearch := func(client, i int) (string, string) {
		return "search", api + search[(client*loadRequests+i)%len(search)]
	}
	onlyManifests := func(client, i int) (string, string) {
		return "manifest GET", manifests[(client*loadRequests+i)%len(manifests)]
	}
	runs := []struct {
		name, addr        string
		clients, requests int
		pick              func(client, i int) (string, string)
	}{
		// One client first: each request alone (the first 20 warm up).
		{"modelreg serve, 1 client, mixed", addr, 1, 420, mixed},
		{"modelreg serve, mixed", addr, loadClients, loadRequests, mixed},
		{"modelreg serve, searches only", addr, loadClients, loadRequests, onlySearch},
		{"modelreg serve, manifest GETs only", addr, loadClients, loadRequests, onlyManifests},
		{"plain distribution, manifest GETs only", plain, loadClients, loadRequests, onlyManifests},
	}
	out := map[string]any{}
	fmt.Printf("\n%d clients x %d requests (at most %s each run)\n", loadClients, loadRequests, loadDeadline)
	fmt.Printf("%-40s %-20s %8s %8s %8s %8s\n", "run", "route", "req/s", "n", "p50 ms", "p99 ms")
	for _, r := range runs {
		res := loadRun("http://"+r.addr, r.clients, r.requests, r.pick)
		out[r.name] = res
		fmt.Printf("%-40s %-20s %8.0f %8d\n", r.name, "(all)", res.Throughput, res.Requests)
		for _, route := range slices.Sorted(func(yield func(string) bool) {
			for k := range res.Routes {
				if !yield(k) {
					return
				}
			}
		}) {
			s := res.Routes[route]
			fmt.Printf("%-40s %-20s %8s %8d %8.2f %8.2f\n", "", route, "", s.N, s.P50, s.P99)
		}
	}
	if !*loadSkipPulls {
		out["concurrent pulls"] = concurrentPulls(c, addr, plain)
	}
	return out
}

// loadStats is one route's latencies in one run.
type loadStats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50ms"`
	P99 float64 `json:"p99ms"`
}

// loadResult is one run: requests per second over the whole run, and
// latencies per route.
type loadResult struct {
	Requests   int                   `json:"requests"`
	Seconds    float64               `json:"seconds"`
	Throughput float64               `json:"requestsPerSecond"`
	Routes     map[string]*loadStats `json:"routes"`
}

// loadRun starts clients goroutines, each with its own transport (its own
// connections, as separate machines would have) making at most requests
// requests, and waits for them. A single client skips its first 20
// latencies (they warm the caches).
// Any answer other than 200 ends the suite.
func loadRun(base string, clients, requests int, pick func(client, i int) (string, string)) loadResult {
	type sample struct {
		route string
		ms    float64
	}
	var mu sync.Mutex
	var samples []sample
	var failed error
	deadline := time.Now().Add(loadDeadline)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: loadDeadline}
			var mine []sample
			<-ready
			for i := 0; i < requests && time.Now().Before(deadline); i++ {
				route, path := pick(c, i)
				req, _ := http.NewRequest(http.MethodGet, base+path, nil)
				req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("GET %s: %s", path, resp.Status)
					}
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				if clients > 1 || i >= 20 {
					mine = append(mine, sample{route, float64(time.Since(t0).Microseconds()) / 1000})
				}
			}
			mu.Lock()
			samples = append(samples, mine...)
			mu.Unlock()
		}()
	}
	t0 := time.Now()
	close(ready)
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	if failed != nil {
		fail("load: " + failed.Error())
	}
	per := map[string][]float64{}
	for _, s := range samples {
		per[s.route] = append(per[s.route], s.ms)
	}
	res := loadResult{Requests: len(samples), Seconds: elapsed, Throughput: float64(len(samples)) / elapsed, Routes: map[string]*loadStats{}}
	for route, lat := range per {
		slices.Sort(lat)
		res.Routes[route] = &loadStats{N: len(lat), P50: lat[len(lat)/2], P99: lat[min(len(lat)-1, len(lat)*99/100)]}
	}
	return res
}

// pushLoadManifests pushes 50 small artifact manifests (10 repositories,
// tags 1.0.0 to 1.4.0) and returns their paths for GET by tag.
func pushLoadManifests(addr string) []string {
	ctx := context.Background()
	var paths []string
	for r := range 10 {
		name := fmt.Sprintf("load/model-%02d", r)
		repo, err := remote.NewRepository(addr + "/" + name)
		check(err)
		repo.PlainHTTP = true
		for v := range 5 {
			d := pushManifest(ctx, repo, "application/vnd.example.load", nil, fmt.Sprint(name, v))
			tag := fmt.Sprintf("1.%d.0", v)
			check(repo.Tag(ctx, d, tag))
			paths = append(paths, "/v2/"+name+"/manifests/"+tag)
		}
	}
	return paths
}

// fillIndex writes 100,000 versions in 1,000 models straight into the
// index under dir, as indexSuite does, and marks the index complete, so
// that the server started on dir serves it instead of rebuilding it from
// (empty) storage.
func fillIndex(dir string) {
	fillIndexAt("sqlite:"+mustDir(filepath.Join(dir, "modelreg"))+"/index.db", 1000, 100)
}

// fillIndexAt writes models × perModel versions into the index at dsn
// (SQLite or PostgreSQL), as fillIndex does.
func fillIndexAt(dsn string, models, perModel int) {
	idx, err := index.Open(dsn)
	check(err)
	frameworks := []string{"pytorch", "sklearn", "xgboost", "jax"}
	ctx := context.Background()
	// PostgreSQL takes several writers at once (SQLite queues them).
	workers := 1
	if idx.Backend() == index.Postgres {
		workers = 4
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for m := range next {
				// Each model's own generator: the same data whatever the workers.
				rng := rand.New(rand.NewPCG(1, uint64(m)))
				repo := fmt.Sprintf("team-%02d/model-%04d", m%50, m)
				var manifests []index.Manifest
				tags := map[string]digest.Digest{}
				for v := range perModel {
					layer := model.LayerDescriptor(model.File{Path: "model.safetensors", Mode: 0o644, Size: 1 << 30, Kind: model.KindWeight}, digest.FromString(fmt.Sprint(m, v)))
					meta := model.Metadata{
						Created:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(m*perModel+v) * time.Minute),
						Framework: frameworks[rng.IntN(len(frameworks))],
						Metrics:   map[string]float64{"accuracy": rng.Float64(), "f1": rng.Float64(), "loss": rng.Float64() * 3},
						Params:    map[string]string{"lr": fmt.Sprint(rng.IntN(10)), "epochs": fmt.Sprint(rng.IntN(100))},
						Labels:    map[string]string{"team": fmt.Sprintf("team-%02d", m%50), "owner": fmt.Sprintf("owner-%d", rng.IntN(200))},
					}
					_, raw, err := model.Pack(meta, []ocispec.Descriptor{layer})
					check(err)
					im, err := index.Describe(repo, ocispec.MediaTypeImageManifest, raw)
					check(err)
					manifests = append(manifests, im)
					tags[fmt.Sprintf("1.%d.0", v)] = im.Digest
				}
				tags["production"] = manifests[perModel-2].Digest
				tags["staging"] = manifests[perModel-1].Digest
				check(idx.ReplaceRepo(ctx, repo, index.Content{Manifests: manifests, Tags: tags}))
			}
		})
	}
	for m := range models {
		if m > 0 && m%1000 == 0 {
			fmt.Printf("  %d of %d models\n", m, models)
		}
		next <- m
	}
	close(next)
	wg.Wait()
	// No blobs to read weights from: the server must not try in the
	// background while the suites measure.
	check(idx.MarkAllRead(ctx))
	check(idx.EndRebuild(ctx))
	check(idx.Close())
}

func copyFile(from, to string) {
	b, err := os.ReadFile(from)
	check(err)
	check(os.WriteFile(to, b, 0o644))
}
