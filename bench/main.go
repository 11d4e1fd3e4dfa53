// Command bench measures modelreg beside its anchors, alternating rounds
// and reporting medians and ratios (these machines are shared and noisy):
//
//   - transfer: modelreg push/pull beside the oras CLI on the same files and
//     the same modelreg serve, with cp as the physical floor, and peak RSS;
//   - overhead: a 2 GiB model through modelreg serve beside the bare
//     embedded distribution handler (modelreg serve --bare);
//   - index: model API search and list latency (p50, p99) over 100,000
//     versions in 1,000 models;
//   - referrers: listing 1,000 referrers of one subject through the
//     Referrers API beside the tag-schema fallback on plain distribution.
//   - wan (not in the default set: minutes): the same clients through a
//     proxy adding latency and a per-connection bandwidth cap (-wan-rtt,
//     -wan-mbps): pull, push, a fresh runner's re-push, resume after kill.
//
// Run it with `make bench`.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelreg/modelreg/internal/fixture"
)

type sample struct {
	Seconds float64 `json:"seconds"`
	MaxRSS  int64   `json:"maxRSSKiB"`
}

type result struct {
	Name       string   `json:"name"`
	Samples    []sample `json:"samples"`
	Median     float64  `json:"medianSeconds"`
	MBps       float64  `json:"throughputMBps"`
	PeakRSSMiB float64  `json:"peakRSSMiB"`
}

// config is what every suite needs.
type config struct {
	modelreg, oras, distribution string
	rounds                       int
	shardMiB                     int64
	work                         string
	// scaleVersions is the index size of the scale suite's searches.
	scaleVersions int
}

func main() {
	var c config
	flag.StringVar(&c.modelreg, "modelreg", "./bin/modelreg", "modelreg binary")
	flag.StringVar(&c.oras, "oras", os.Getenv("MODELREG_ORAS"), "oras binary")
	flag.StringVar(&c.distribution, "distribution", os.Getenv("MODELREG_DISTRIBUTION"), "plain distribution registry binary")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per measurement")
	flag.Int64Var(&c.shardMiB, "shard-mib", 512, "size of each of the 4 weight shards, MiB")
	flag.IntVar(&c.scaleVersions, "scale-versions", 1_000_000, "scale suite: versions in the index searched on SQLite and PostgreSQL (0: no searches, only the S3 measurements)")
	suites := flag.String("suite", "transfer,overhead,index,referrers,load,wan,imageview,scale", "comma-separated suites to run")
	out := flag.String("json", "bench-results.json", "where to write the results")
	flag.Parse()
	if c.oras == "" || c.distribution == "" {
		fail("no oras or distribution binary: run `make bench`, or pass -oras and -distribution")
	}
	for _, p := range []*string{&c.modelreg, &c.oras, &c.distribution} {
		abs, err := filepath.Abs(*p)
		check(err)
		*p = abs
	}
	var err error
	c.work, err = os.MkdirTemp("", "modelreg-bench-")
	check(err)
	defer os.RemoveAll(c.work)

	all := map[string]any{}
	for _, name := range strings.Split(*suites, ",") {
		fmt.Printf("\n== %s ==\n", name)
		switch strings.TrimSpace(name) {
		case "transfer":
			all["transfer"] = transferSuite(c)
		case "overhead":
			all["overhead"] = overheadSuite(c)
		case "index":
			all["index"] = indexSuite(c)
		case "load":
			all["load"] = loadSuite(c)
		case "referrers":
			all["referrers"] = referrersSuite(c)
		case "wan":
			all["wan"] = wanSuite(c)
		case "imageview":
			all["imageview"] = imageViewSuite(c)
		case "scale":
			all["scale"] = scaleSuite(c)
		default:
			fail("unknown suite " + name)
		}
	}
	b, _ := json.MarshalIndent(all, "", "  ")
	check(os.WriteFile(*out, b, 0o644))
	fmt.Printf("\nresults written to %s\n", *out)
}

// transferSuite: modelreg push/pull beside oras on the same files and the
// same modelreg serve, and cp as the floor.
func transferSuite(c config) map[string]any {
	model := filepath.Join(c.work, "model")
	var total int64
	for i := range 4 {
		total += writeRandom(filepath.Join(model, fmt.Sprintf("model-%05d-of-00004.safetensors", i+1)), c.shardMiB<<20, uint64(i))
	}
	for i := range 20 {
		total += writeRandom(filepath.Join(model, "extra", fmt.Sprintf("file-%02d.json", i)), 4096+int64(i)*1024, uint64(100+i))
	}
	defer os.RemoveAll(model)
	fmt.Printf("model: %d files, %.2f GiB\n", 24, float64(total)/(1<<30))

	addr, stop := serve(c.modelreg, filepath.Join(c.work, "data-transfer"))
	defer stop()
	plain, stopPlain := startDistribution(c, filepath.Join(c.work, "data-transfer-plain"))
	defer stopPlain()
	env := append(os.Environ(), "HOME="+c.work, "DOCKER_CONFIG="+filepath.Join(c.work, ".docker"), "XDG_CACHE_HOME="+filepath.Join(c.work, "cache"))

	results := map[string]*result{}
	files := relFiles(model)
	for round := range c.rounds {
		repoM := fmt.Sprintf("%s/bench/modelreg-%d", addr, round)
		repoO := fmt.Sprintf("%s/bench/oras-%d", addr, round)
		repoP := fmt.Sprintf("%s/bench/oras-%d", plain, round)
		// --no-cache: every round is a cold push that reads and sends everything.
		add(results, "modelreg push", run(env, model, c.modelreg, "push", "--no-cache", repoM+":1.0.0", model))
		add(results, "oras push", run(env, model, c.oras, append([]string{"push", "--plain-http", repoO + ":1.0.0"}, files...)...))
		add(results, "oras push (plain distribution)", run(env, model, c.oras, append([]string{"push", "--plain-http", repoP + ":1.0.0"}, files...)...))
		dst := filepath.Join(c.work, "pull")
		add(results, "modelreg pull", run(env, c.work, c.modelreg, "pull", repoM+":1.0.0", "-o", dst))
		check(os.RemoveAll(dst))
		add(results, "oras pull", run(env, c.work, c.oras, "pull", "--plain-http", repoO+":1.0.0", "-o", dst))
		check(os.RemoveAll(dst))
		add(results, "oras pull (plain distribution)", run(env, c.work, c.oras, "pull", "--plain-http", repoP+":1.0.0", "-o", dst))
		check(os.RemoveAll(dst))
		add(results, "cp", run(env, c.work, "cp", "-r", model, dst))
		check(os.RemoveAll(dst))
		add(results, "dd conv=fdatasync", run(env, c.work, "dd", "if=/dev/zero", "of="+filepath.Join(c.work, "dd.out"), "bs=1M", fmt.Sprint("count=", total>>20), "conv=fdatasync"))
		check(os.Remove(filepath.Join(c.work, "dd.out")))
		fmt.Printf("round %d done\n", round+1)
	}
	report(results, total, []string{"modelreg push", "oras push", "oras push (plain distribution)", "modelreg pull", "oras pull", "oras pull (plain distribution)", "cp", "dd conv=fdatasync"})
	ratios := map[string]float64{
		"modelreg push / oras push":                      ratio(results, "modelreg push", "oras push"),
		"modelreg push / oras push (plain distribution)": ratio(results, "modelreg push", "oras push (plain distribution)"),
		"modelreg pull / oras pull":                      ratio(results, "modelreg pull", "oras pull"),
		"modelreg pull / cp":                             ratio(results, "modelreg pull", "cp"),
	}
	printRatios(ratios)

	// Re-push with one of the 24 files changed, from the machine that pushed first.
	repo := addr + "/bench/repush"
	firstRun := run(env, model, c.modelreg, "push", repo+":1.0.0", model)
	changed := filepath.Join(model, "extra", "file-07.json")
	info, _ := os.Stat(changed)
	writeRandom(changed, info.Size(), 777)
	var rep struct{ Uploaded int64 }
	again := runJSON(env, model, &rep, c.modelreg, "push", repo+":1.1.0", model, "--output", "json")
	fmt.Printf("\nre-push, 1 of 24 files changed (%d bytes): sent %d bytes (file + config), %.2f s vs %.2f s first push (%.1f%%)\n",
		info.Size(), rep.Uploaded, again.Seconds, firstRun.Seconds, 100*again.Seconds/firstRun.Seconds)
	repush := map[string]any{"changedFileBytes": info.Size(), "sentBytes": rep.Uploaded, "seconds": again.Seconds, "firstPushSeconds": firstRun.Seconds,
		"timeRatio": again.Seconds / firstRun.Seconds}

	resume := resumeScenario(c, env, addr)
	return map[string]any{"bytes": total, "rounds": c.rounds, "results": results, "ratios": ratios, "repush": repush, "resume": resume}
}

// runJSON runs a command and decodes its standard output.
func runJSON(env []string, dir string, out any, bin string, args ...string) sample {
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fail(fmt.Sprintf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, stderr.String()))
	}
	s := sample{Seconds: time.Since(start).Seconds(), MaxRSS: cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss}
	check(json.Unmarshal([]byte(stdout.String()), out))
	return s
}

func add(results map[string]*result, name string, s sample) {
	r := results[name]
	if r == nil {
		r = &result{Name: name}
		results[name] = r
	}
	r.Samples = append(r.Samples, s)
}

// report computes medians and prints a table of throughput and peak RSS.
func report(results map[string]*result, bytes int64, names []string) {
	fmt.Printf("\n%-22s %10s %10s %12s\n", "client", "median s", "MB/s", "peak RSS MiB")
	for _, n := range names {
		r := results[n]
		var secs []float64
		for _, s := range r.Samples {
			secs = append(secs, s.Seconds)
			r.PeakRSSMiB = max(r.PeakRSSMiB, float64(s.MaxRSS)/1024)
		}
		slices.Sort(secs)
		r.Median = secs[len(secs)/2]
		r.MBps = float64(bytes) / 1e6 / r.Median
		fmt.Printf("%-22s %10.2f %10.1f %12.1f\n", n, r.Median, r.MBps, r.PeakRSSMiB)
	}
}

func ratio(results map[string]*result, a, b string) float64 { return results[a].MBps / results[b].MBps }

func printRatios(ratios map[string]float64) {
	fmt.Println()
	for _, k := range slices.Sorted(maps.Keys(ratios)) {
		fmt.Printf("%-40s %.2fx\n", k, ratios[k])
	}
}

// run times one command and reads its peak RSS from the kernel's rusage.
func run(env []string, dir, bin string, args ...string) sample {
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fail(fmt.Sprintf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, stderr.String()))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return sample{Seconds: time.Since(start).Seconds(), MaxRSS: ru.Maxrss}
}

func serve(bin, data string) (string, func()) { return serveArgs(bin, data) }

// serveArgs runs `modelreg serve` on a free port until stop is called.
func serveArgs(bin, data string, extra ...string) (string, func()) {
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data, "--log-format", "json", "--log-level", "info"}, extra...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pipe, err := cmd.StderrPipe()
	check(err)
	check(cmd.Start())
	addr := make(chan string, 1)
	var logs strings.Builder
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "registry listening" {
				addr <- rec.Addr
			}
			mu.Lock()
			if logs.Len() < 64<<10 {
				logs.WriteString(sc.Text() + "\n")
			}
			mu.Unlock()
		}
	}()
	select {
	case a := <-addr:
		return a, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		mu.Lock()
		defer mu.Unlock()
		fail("modelreg serve did not start:\n" + logs.String())
	}
	return "", nil
}

func relFiles(root string) []string {
	var out []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func writeRandom(path string, size int64, seed uint64) int64 {
	_, err := fixture.WriteRandom(path, size, seed)
	check(err)
	return size
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench:", msg)
	os.Exit(1)
}
