package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

var (
	wanRTT  = flag.Duration("wan-rtt", 40*time.Millisecond, "wan suite: round-trip time the proxy adds")
	wanMBps = flag.Float64("wan-mbps", 25, "wan suite: bandwidth cap of each connection, each way, MB/s")
	wanMiB  = flag.Int64("wan-mib", 1024, "wan suite: size of the single-file model pulled, and of the four shards pushed together, MiB")
)

// wanProxy is a TCP proxy in front of a registry that adds latency and caps
// each connection's bandwidth in each direction: what a registry across a
// real network, or an object store behind it, looks like. It works at the
// TCP level, so clients address the proxy and the registry builds its
// absolute upload Locations from that Host: uploads stay behind the proxy.
type wanProxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration
	perSec float64
	wg     sync.WaitGroup
}

func startWAN(target string, rtt time.Duration, mbps float64) (*wanProxy, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	p := &wanProxy{ln: ln, target: target, oneWay: rtt / 2, perSec: mbps * 1e6}
	go p.accept()
	return p, ln.Addr().String()
}

func (p *wanProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go p.shape(c, up)
		go p.shape(up, c)
	}
}

// shape copies src to dst: each chunk leaves one one-way delay after it
// arrived, and no sooner than the bandwidth cap allows after the chunk
// before it.
func (p *wanProxy) shape(src, dst net.Conn) {
	defer p.wg.Done()
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		next := time.Now()
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				now := time.Now()
				at := now.Add(p.oneWay)
				if capped := next.Add(time.Duration(float64(n) / p.perSec * float64(time.Second))); capped.After(at) {
					at = capped
				}
				next = at
				q <- chunk{b[:n], at}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
	io.Copy(io.Discard, src)
}

func (p *wanProxy) stop() { p.ln.Close() }

// wanSuite runs the users' figures through the proxy: modelreg beside the
// oras CLI on the same files, registry and link.
func wanSuite(c config) map[string]any {
	size := *wanMiB << 20
	fmt.Printf("link: %.0f MB/s per connection each way, %v round trip; model %d MiB\n", *wanMBps, *wanRTT, *wanMiB)
	regAddr, stopReg := serve(c.modelreg, filepath.Join(c.work, "data-wan"))
	defer stopReg()
	proxy, addr := startWAN(regAddr, *wanRTT, *wanMBps)
	defer proxy.stop()
	env := append(os.Environ(), "HOME="+c.work, "DOCKER_CONFIG="+filepath.Join(c.work, ".docker"), "XDG_CACHE_HOME="+filepath.Join(c.work, "cache-wan"))

	one := filepath.Join(c.work, "wan-one")
	writeRandom(filepath.Join(one, "model.safetensors"), size, 71)
	shards := filepath.Join(c.work, "wan-shards")
	for i := range 4 {
		writeRandom(filepath.Join(shards, fmt.Sprintf("model-%d-of-4.safetensors", i+1)), size/4, uint64(80+i))
	}
	defer os.RemoveAll(one)
	defer os.RemoveAll(shards)
	results := map[string]*result{}
	// The single-file model, for the pulls (pushed on loopback: setup).
	var pushed struct{ Digest string }
	runJSON(env, c.work, &pushed, c.modelreg, "push", regAddr+"/bench/one:1.0.0", one, "--output", "json")
	for r := range c.rounds {
		out := filepath.Join(c.work, fmt.Sprintf("wan-pull-%d", r))
		// --connections: the proxy listens on loopback, where pull's default
		// is one stream (a real registry across a link gets ranges by default).
		add(results, "modelreg pull", run(env, c.work, c.modelreg, "pull", addr+"/bench/one:1.0.0", "-o", out, "--connections", "8"))
		os.RemoveAll(out)
		orasOut := filepath.Join(c.work, fmt.Sprintf("wan-oras-pull-%d", r))
		check(os.MkdirAll(orasOut, 0o755))
		add(results, "oras pull", run(env, orasOut, c.oras, "pull", "--plain-http", addr+"/bench/one:1.0.0"))
		os.RemoveAll(orasOut)
	}
	report(results, size, []string{"modelreg pull", "oras pull"})
	pushResults := map[string]*result{}
	files := relFiles(shards)
	for r := range c.rounds {
		// --connections 8: as for pull, the loopback proxy would otherwise
		// get one connection per file.
		// Fresh blobs each round for both: a different repository, so
		// nothing is skipped (a blob is found only in its own repository).
		add(pushResults, "modelreg push", run(env, c.work, c.modelreg, "push", fmt.Sprintf("%s/bench/shards-%d:1.0.0", addr, r), shards, "--no-cache", "--created", "2026-01-01T00:00:00Z", "--connections", "8"))
		args := append([]string{"push", "--plain-http", "--artifact-type", "application/vnd.cncf.model.manifest.v1+json", fmt.Sprintf("%s/bench/oras-shards-%d:1.0.0", addr, r)}, files...)
		add(pushResults, "oras push", run(env, shards, c.oras, args...))
	}
	report(pushResults, size, []string{"modelreg push", "oras push"})

	// A fresh runner (empty cache, copied directory) re-pushes the shards.
	fresh := filepath.Join(c.work, "wan-fresh")
	check(exec.Command("cp", "-r", shards, fresh).Run())
	defer os.RemoveAll(fresh)
	freshEnv := append(os.Environ(), "HOME="+filepath.Join(c.work, "fresh-home"), "XDG_CACHE_HOME="+filepath.Join(c.work, "fresh-cache"))
	var again struct{ Uploaded, Size int64 }
	s := runJSON(freshEnv, c.work, &again, c.modelreg, "push", addr+"/bench/shards-0:2.0.0", fresh, "--dedupe", "hash", "--output", "json")
	first := pushResults["modelreg push"].Median
	fmt.Printf("fresh-runner re-push (--dedupe hash): sent %d of %d bytes in %.2f s (%.0f%% of the first push)\n", again.Uploaded, again.Size, s.Seconds, 100*s.Seconds/first)

	ratios := map[string]float64{
		"modelreg pull / oras pull (wan)": ratio(results, "modelreg pull", "oras pull"),
		"modelreg push / oras push (wan)": ratio(pushResults, "modelreg push", "oras push"),
	}
	printRatios(ratios)
	resume := wanResume(c, env, proxy, addr)
	return map[string]any{"rttMs": wanRTT.Milliseconds(), "mbpsPerConnection": *wanMBps, "bytes": size, "pull": results, "push": pushResults,
		"freshRepush": map[string]any{"sentBytes": again.Uploaded, "bytes": again.Size, "seconds": s.Seconds, "firstPushSeconds": first}, "ratios": ratios, "resume": resume}
}

// wanResume kills a push of a 1 GiB file through the link at about half,
// then pushes again: the fraction sent again, streamed (one connection,
// 16 MiB chunks) and in parts (8 connections).
func wanResume(c config, env []string, _ *wanProxy, addr string) map[string]any {
	size := *wanMiB << 20
	dir := filepath.Join(c.work, "wan-resume")
	writeRandom(filepath.Join(dir, "model.safetensors"), size, 4343)
	defer os.RemoveAll(dir)
	out := map[string]any{}
	for _, m := range []struct {
		name  string
		conns int
		args  []string
	}{
		{"streamed", 1, []string{"--chunk-size", "16", "--connections", "1"}},
		{"in parts", 8, []string{"--connections", "8"}},
	} {
		ref := fmt.Sprintf("%s/bench/wan-resume-%d:1.0.0", addr, m.conns)
		cmd := exec.Command(c.modelreg, append([]string{"push", ref, dir, "--no-cache"}, m.args...)...)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		check(cmd.Start())
		// At the capped rate, half the file takes size/2/(rate × connections).
		time.Sleep(time.Duration(float64(size/2) / (*wanMBps * 1e6 * float64(m.conns)) * float64(time.Second)))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		var res struct{ Uploaded int64 }
		s := runJSON(env, c.work, &res, c.modelreg, append([]string{"push", ref, dir, "--no-cache", "--output", "json"}, m.args...)...)
		fmt.Printf("resume through the link, %s: killed (SIGKILL) after about half; the second run sent %d bytes (%.1f%% of the file) in %.2f s\n", m.name, res.Uploaded, 100*float64(res.Uploaded)/float64(size), s.Seconds)
		out[m.name] = map[string]any{"fileBytes": size, "secondRunBytes": res.Uploaded, "fraction": float64(res.Uploaded) / float64(size), "seconds": s.Seconds}
	}
	return out
}
