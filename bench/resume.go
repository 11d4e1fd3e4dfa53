package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// resumeScenario kills a push of a 1 GiB file when half of it has been
// acknowledged (a proxy holds the upload there) and pushes again: the second
// run must send at most 60% of the file.
func resumeScenario(c config, env []string, addr string) map[string]any {
	const size = 1 << 30
	dir := filepath.Join(c.work, "resume")
	writeRandom(filepath.Join(dir, "model.safetensors"), size, 4242)
	defer os.RemoveAll(dir)
	target, _ := url.Parse("http://" + addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var sent atomic.Int64
	var armed atomic.Bool
	armed.Store(true)
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch && armed.Load() && sent.Add(r.ContentLength) > size/2 {
			<-release
			http.Error(w, "stalled", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	ref := ln.Addr().String() + "/bench/resume:1.0.0"
	cmd := exec.Command(c.modelreg, "push", ref, dir, "--chunk-size", "64")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	for sent.Load() <= size/2 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	armed.Store(false)
	close(release)
	var res struct{ Uploaded int64 }
	s := runJSON(env, c.work, &res, c.modelreg, "push", ref, dir, "--chunk-size", "64", "--output", "json")
	fmt.Printf("resume: killed at half of a 1 GiB upload; the second run sent %d bytes (%.0f%% of the file) in %.2f s\n", res.Uploaded, 100*float64(res.Uploaded)/size, s.Seconds)
	return map[string]any{"fileBytes": size, "secondRunBytes": res.Uploaded, "fraction": float64(res.Uploaded) / size}
}
