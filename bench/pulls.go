package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

var loadSkipPulls = flag.Bool("load-skip-pulls", false, "load suite: skip its concurrent pulls (the request runs only)")

var loadPullsOnly = flag.Bool("load-pulls-only", false, "load suite: run only its concurrent pulls of one large model (no index fill, no request runs)")

// Concurrent pulls in the load suite: 32 clients at once, one model version
// holding a single 256 MiB file. One round (the machine is shared; the
// figures are ratios, never assertions).
const (
	pullClients = 32
	pullMiB     = 256
	// pullKeepGiB is the free space under which each pulled directory is
	// deleted as soon as its pull ends instead of after all of them.
	pullKeepGiB = 20
)

// pullRun is one run of concurrent pulls: aggregate throughput (every
// client's bytes over the wall time from the common start to the last end)
// and the slowest client's time.
type pullRun struct {
	Clients    int     `json:"clients"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	MBps       float64 `json:"aggregateMBps"`
	Slowest    float64 `json:"slowestSeconds"`
	PeakRSSMiB float64 `json:"peakRSSMiB,omitempty"`
}

// concurrentPulls pushes one version with a single 256 MiB random file to
// modelreg serve at addr (with `modelreg push`) and the same bytes as a blob
// to plain distribution at plain (with oras-go), then starts 32 pulls at once
// and waits for them, for:
//
//   - `modelreg pull --connections 1` (the binary; each its own output
//     directory and cache, as 32 machines would have) from modelreg serve;
//   - plain blob GETs (each client its own connection, the whole blob read
//     and its sha256 checked) from modelreg serve and from plain
//     distribution: the like-for-like comparison of the two servers.
func concurrentPulls(c config, addr, plain string) map[string]any {
	const name = "bench/pulls"
	dir := filepath.Join(c.work, "pulls-model")
	file := filepath.Join(dir, "model.safetensors")
	size := writeRandom(file, pullMiB<<20, 3232)
	defer os.RemoveAll(dir)
	f, err := os.Open(file)
	check(err)
	dgst, err := digest.FromReader(f)
	check(err)
	f.Close()

	env := append(os.Environ(), "HOME="+c.work, "DOCKER_CONFIG="+filepath.Join(c.work, ".docker"), "XDG_CACHE_HOME="+filepath.Join(c.work, "cache-pulls"))
	var pushed struct{ Digest string }
	runJSON(env, c.work, &pushed, c.modelreg, "push", "--plain-http", "--no-cache", addr+"/"+name+":1.0.0", dir, "--output", "json")
	repo, err := remote.NewRepository(plain + "/" + name)
	check(err)
	repo.PlainHTTP = true
	f, err = os.Open(file)
	check(err)
	check(repo.Blobs().Push(context.Background(), ocispec.Descriptor{MediaType: "application/octet-stream", Digest: dgst, Size: size}, f))
	f.Close()

	var st syscall.Statfs_t
	check(syscall.Statfs(c.work, &st))
	free := int64(st.Bavail) * st.Bsize
	deleteEach := free < pullKeepGiB<<30

	fmt.Printf("\n%d concurrent pulls of a %d MiB model (one round; %.0f GiB free in %s", pullClients, pullMiB, float64(free)/(1<<30), c.work)
	if deleteEach {
		fmt.Printf(", under %d GiB: each pulled directory is deleted as soon as its pull ends)\n", pullKeepGiB)
	} else {
		fmt.Printf(": pulled directories are deleted after all pulls end)\n")
	}
	blobPath := "/v2/" + name + "/blobs/" + dgst.String()
	runs := []struct {
		name  string
		pull  func(i int) sample
		after func(i int) // run once pull i ends, outside the timing
	}{
		{"blob GETs, modelreg serve", func(int) sample { return blobGET("http://"+addr+blobPath, dgst, size) }, nil},
		{"blob GETs, plain distribution", func(int) sample { return blobGET("http://"+plain+blobPath, dgst, size) }, nil},
		{"modelreg pull, modelreg serve", func(i int) sample {
			own := filepath.Join(c.work, fmt.Sprintf("pulls-%02d", i))
			out := filepath.Join(own, "model")
			env := append(os.Environ(), "HOME="+own, "DOCKER_CONFIG="+filepath.Join(own, ".docker"), "XDG_CACHE_HOME="+filepath.Join(own, "cache"))
			s := run(env, mustDir(own), c.modelreg, "pull", "--plain-http", "--connections", "1", addr+"/"+name+":1.0.0", "-o", out)
			if info, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil || info.Size() != size {
				fail(fmt.Sprintf("modelreg pull into %s: model.safetensors missing or of the wrong size (%v)", out, err))
			}
			return s
		}, func(i int) {
			if deleteEach {
				check(os.RemoveAll(filepath.Join(c.work, fmt.Sprintf("pulls-%02d", i))))
			}
		}},
	}
	results := map[string]pullRun{}
	fmt.Printf("%-40s %10s %10s %12s\n", "run", "MB/s", "slowest s", "peak RSS MiB")
	for _, r := range runs {
		res := pullAll(pullClients, size, r.pull, r.after)
		results[r.name] = res
		rss := ""
		if res.PeakRSSMiB > 0 {
			rss = fmt.Sprintf("%.1f", res.PeakRSSMiB)
		}
		fmt.Printf("%-40s %10.1f %10.2f %12s\n", r.name, res.MBps, res.Slowest, rss)
	}
	for i := range pullClients {
		check(os.RemoveAll(filepath.Join(c.work, fmt.Sprintf("pulls-%02d", i))))
	}
	ratios := map[string]float64{
		"blob GETs: modelreg serve / plain distribution": results["blob GETs, modelreg serve"].MBps / results["blob GETs, plain distribution"].MBps,
		"modelreg pull / blob GETs (modelreg serve)":     results["modelreg pull, modelreg serve"].MBps / results["blob GETs, modelreg serve"].MBps,
	}
	fmt.Println()
	for _, k := range slices.Sorted(maps.Keys(ratios)) {
		fmt.Printf("%-48s %.2fx\n", k, ratios[k])
	}
	return map[string]any{"clients": pullClients, "bytesEach": size, "manifest": pushed.Digest, "blob": dgst.String(),
		"pulledDirsDeletedEach": deleteEach, "runs": results, "ratios": ratios}
}

// pullAll starts n pulls at once and waits for them. The wall time runs
// from the common start to the end of the last pull; after (if not nil)
// runs once a pull ends and is not counted.
func pullAll(n int, size int64, pull func(i int) sample, after func(i int)) pullRun {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Time
	var slowest float64
	var rss int64
	ready := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			s := pull(i)
			end := time.Now()
			mu.Lock()
			if end.After(last) {
				last = end
			}
			slowest = max(slowest, s.Seconds)
			rss = max(rss, s.MaxRSS)
			mu.Unlock()
			if after != nil {
				after(i)
			}
		}()
	}
	t0 := time.Now()
	close(ready)
	wg.Wait()
	secs := last.Sub(t0).Seconds()
	return pullRun{Clients: n, Bytes: int64(n) * size, Seconds: secs, MBps: float64(int64(n)*size) / 1e6 / secs, Slowest: slowest, PeakRSSMiB: float64(rss) / 1024}
}

// blobGET reads one blob whole over its own connection and checks its size
// and sha256; any failure ends the suite.
func blobGET(url string, want digest.Digest, size int64) sample {
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	t0 := time.Now()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	check(err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Sprintf("GET %s: %s", url, resp.Status))
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	check(err)
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != size || got != want.String() {
		fail(fmt.Sprintf("GET %s: %d bytes, %s; want %d bytes, %s", url, n, got, size, want))
	}
	return sample{Seconds: time.Since(t0).Seconds()}
}
