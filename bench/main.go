// Command bench measures modelreg's transfers beside the oras CLI on the
// same files and the same `modelreg serve`, with cp as the physical floor.
// It alternates the tools over several rounds and reports medians, ratios
// and each client's peak RSS. Run it with `make bench`.
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

func main() {
	modelreg := flag.String("modelreg", "./bin/modelreg", "modelreg binary")
	oras := flag.String("oras", os.Getenv("MODELREG_ORAS"), "oras binary")
	rounds := flag.Int("rounds", 3, "rounds per measurement")
	shard := flag.Int64("shard-mib", 512, "size of each of the 4 weight shards, MiB")
	out := flag.String("json", "bench-results.json", "where to write the results")
	flag.Parse()
	if *oras == "" {
		fail("no oras binary: run `make bench`, or pass -oras")
	}
	for _, p := range []*string{modelreg, oras} {
		abs, err := filepath.Abs(*p)
		check(err)
		*p = abs
	}
	work, err := os.MkdirTemp("", "modelreg-bench-")
	check(err)
	defer os.RemoveAll(work)

	model := filepath.Join(work, "model")
	var total int64
	for i := range 4 {
		total += writeRandom(filepath.Join(model, fmt.Sprintf("model-%05d-of-00004.safetensors", i+1)), *shard<<20, uint64(i))
	}
	for i := range 20 {
		total += writeRandom(filepath.Join(model, "extra", fmt.Sprintf("file-%02d.json", i)), 4096+int64(i)*1024, uint64(100+i))
	}
	fmt.Printf("model: %d files, %.2f GiB in %s\n", 24, float64(total)/(1<<30), model)

	addr, stop := serve(*modelreg, filepath.Join(work, "data"))
	defer stop()
	env := append(os.Environ(), "HOME="+work, "DOCKER_CONFIG="+filepath.Join(work, ".docker"))

	results := map[string]*result{}
	add := func(name string, s sample) {
		r := results[name]
		if r == nil {
			r = &result{Name: name}
			results[name] = r
		}
		r.Samples = append(r.Samples, s)
	}
	files := relFiles(model)
	for round := range *rounds {
		repoM := fmt.Sprintf("%s/bench/modelreg-%d", addr, round)
		repoO := fmt.Sprintf("%s/bench/oras-%d", addr, round)
		add("modelreg push", run(env, model, *modelreg, "push", repoM+":1.0.0", model))
		add("oras push", run(env, model, *oras, append([]string{"push", "--plain-http", repoO + ":1.0.0"}, files...)...))
		dst := filepath.Join(work, "pull")
		add("modelreg pull", run(env, work, *modelreg, "pull", repoM+":1.0.0", "-o", dst))
		check(os.RemoveAll(dst))
		add("oras pull", run(env, work, *oras, "pull", "--plain-http", repoO+":1.0.0", "-o", dst))
		check(os.RemoveAll(dst))
		add("cp", run(env, work, "cp", "-r", model, dst))
		check(os.RemoveAll(dst))
		fmt.Printf("round %d done\n", round+1)
	}

	names := []string{"modelreg push", "oras push", "modelreg pull", "oras pull", "cp"}
	fmt.Printf("\n%-14s %10s %10s %12s\n", "client", "median s", "MB/s", "peak RSS MiB")
	for _, n := range names {
		r := results[n]
		var secs []float64
		for _, s := range r.Samples {
			secs = append(secs, s.Seconds)
			r.PeakRSSMiB = max(r.PeakRSSMiB, float64(s.MaxRSS)/1024)
		}
		slices.Sort(secs)
		r.Median = secs[len(secs)/2]
		r.MBps = float64(total) / 1e6 / r.Median
		fmt.Printf("%-14s %10.2f %10.1f %12.1f\n", n, r.Median, r.MBps, r.PeakRSSMiB)
	}
	ratio := func(a, b string) float64 { return results[a].MBps / results[b].MBps }
	ratios := map[string]float64{
		"modelreg push / oras push": ratio("modelreg push", "oras push"),
		"modelreg pull / oras pull": ratio("modelreg pull", "oras pull"),
		"modelreg pull / cp":        ratio("modelreg pull", "cp"),
	}
	fmt.Println()
	for _, k := range slices.Sorted(maps.Keys(ratios)) {
		fmt.Printf("%-28s %.2fx\n", k, ratios[k])
	}
	b, _ := json.MarshalIndent(map[string]any{"bytes": total, "rounds": *rounds, "results": results, "ratios": ratios}, "", "  ")
	check(os.WriteFile(*out, b, 0o644))
	fmt.Printf("\nresults written to %s\n", *out)
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

func serve(bin, data string) (string, func()) {
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", data, "--log-format", "json", "--log-level", "info")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pipe, err := cmd.StderrPipe()
	check(err)
	check(cmd.Start())
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "registry listening" {
				addr <- rec.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		return a, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		fail("modelreg serve did not start")
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
