package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// resumeScenario kills a push of a 1 GiB file with SIGKILL once its own
// `modelreg serve` holds a little more than half of it (so the kill lands in
// the middle of a chunk, with part of it in flight) and pushes again: the
// second run should send only what the registry lacks. Nothing stands
// between client and registry; the registry's upload file is watched on
// disk. The transfer suite's server (at its addr argument) is not used, so
// the upload's data directory is known.
func resumeScenario(c config, env []string, _ string) map[string]any {
	const size = 1 << 30
	const chunkMiB = 64
	dir := filepath.Join(c.work, "resume")
	writeRandom(filepath.Join(dir, "model.safetensors"), size, 4242)
	defer os.RemoveAll(dir)
	data := filepath.Join(c.work, "data-resume")
	defer os.RemoveAll(data)
	addr, stop := serve(c.modelreg, data)
	defer stop()
	const repo = "bench/resume"
	ref := addr + "/" + repo + ":1.0.0"
	cmd := exec.Command(c.modelreg, "push", ref, dir, "--chunk-size", fmt.Sprint(chunkMiB))
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	for held(data, repo) < size/2+8<<20 {
		select {
		case <-done:
			fail("resume: the push ended before it was half-way")
		default:
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	// Let the request the kill cut short finish writing.
	atKill := held(data, repo)
	for stable := 0; stable < 10; {
		time.Sleep(50 * time.Millisecond)
		if n := held(data, repo); n != atKill {
			atKill, stable = n, 0
		} else {
			stable++
		}
	}
	var res struct{ Uploaded int64 }
	s := runJSON(env, c.work, &res, c.modelreg, "push", ref, dir, "--chunk-size", fmt.Sprint(chunkMiB), "--output", "json")
	fmt.Printf("resume: push killed (SIGKILL) with %d of %d bytes at the registry (%.1f%%, mid-chunk: %v); the second run sent %d bytes (%.1f%% of the file) in %.2f s\n",
		atKill, size, 100*float64(atKill)/size, atKill%(chunkMiB<<20) != 0, res.Uploaded, 100*float64(res.Uploaded)/size, s.Seconds)
	return map[string]any{"fileBytes": size, "chunkBytes": chunkMiB << 20, "heldAtKill": atKill,
		"secondRunBytes": res.Uploaded, "fraction": float64(res.Uploaded) / size, "seconds": s.Seconds}
}

// held is the size of the registry's upload in progress to repo, read from
// distribution's storage under data.
func held(data, repo string) int64 {
	files, _ := filepath.Glob(filepath.Join(data, "docker", "registry", "v2", "repositories", repo, "_uploads", "*", "data"))
	var n int64
	for _, f := range files {
		if info, err := os.Stat(f); err == nil {
			n = max(n, info.Size())
		}
	}
	return n
}
