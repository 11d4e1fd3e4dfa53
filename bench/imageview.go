package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// imageViewSuite measures the image view of a 2 GiB model (4 shards of 512
// MiB): `ctr image pull` of the view derived by modelreg serve (tar layers
// synthesized from the stored raw blobs) beside `ctr image pull` of the
// same image stored with real tar layers on plain distribution (written by
// `modelreg push --image`: the same digest, an ordinary image there); the
// time from the end of the push to the view being ready; and what serving
// the view adds to storage. Each pull goes to a fresh containerd (its own
// root, so nothing is cached), started here as root.
func imageViewSuite(c config) map[string]any {
	if _, err := exec.LookPath("ctr"); err != nil {
		fail("ctr (containerd) is not installed: run `make deb-tools`")
	}
	const shards, shardSize = 4, 512 << 20
	src := filepath.Join(c.work, "iv-model")
	for i := range shards {
		writeRandom(filepath.Join(src, fmt.Sprintf("model-%d-of-%d.safetensors", i+1, shards)), shardSize, uint64(500+i))
	}
	defer os.RemoveAll(src)
	size := int64(shards * shardSize)
	env := append(os.Environ(), "HOME="+c.work, "XDG_CACHE_HOME="+filepath.Join(c.work, "cache-iv"))

	data := filepath.Join(c.work, "data-iv")
	addr, stop := serve(c.modelreg, data)
	defer stop()
	plain, stopPlain := startDistribution(c, filepath.Join(c.work, "data-iv-plain"))
	defer stopPlain()

	created := "2026-01-01T00:00:00Z"
	run(env, c.work, c.modelreg, "push", addr+"/bench/iv:1.0.0", src, "--created", created, "--no-cache")
	pushed := time.Now()
	before := dirBytes(data)
	var view struct{ Digest string }
	getJSON("http://"+addr+"/v2/_modelreg/v1/models/bench/iv/versions/1.0.0/image", &view)
	ready := time.Since(pushed)
	var written struct{ Image string }
	runJSON(env, c.work, &written, c.modelreg, "push", plain+"/bench/iv:1.0.0", src, "--created", created, "--no-cache", "--image", "--output", "json")

	served := addr + "/bench/iv/image@" + view.Digest
	stored := plain + "/bench/iv@" + view.Digest
	if written.Image != stored {
		fail(fmt.Sprintf("the client-written view is %s, the served one %s: not the same image", written.Image, served))
	}
	results := map[string]*result{}
	for range c.rounds {
		add(results, "ctr pull (modelreg serve)", ctrPull(c, served))
		add(results, "ctr pull (distribution)", ctrPull(c, stored))
	}
	report(results, size, []string{"ctr pull (modelreg serve)", "ctr pull (distribution)"})
	after := dirBytes(data)
	ratios := map[string]float64{"ctr pull: modelreg serve view / distribution image": ratio(results, "ctr pull (modelreg serve)", "ctr pull (distribution)")}
	printRatios(ratios)
	fmt.Printf("view ready %.2f s after the push of %d MiB ended (tar digests: one read of each file, in the background)\n", ready.Seconds(), size>>20)
	fmt.Printf("storage of modelreg serve: %d bytes with the version, %d after serving its view (+%d bytes, %.3f%% of the version)\n",
		before, after, after-before, 100*float64(after-before)/float64(size))
	return map[string]any{"bytes": size, "pulls": results, "ratios": ratios, "viewReadySeconds": ready.Seconds(),
		"storageBefore": before, "storageAfter": after}
}

// ctrPull times `ctr image pull` (fetch and unpack) into a containerd of
// its own.
func ctrPull(c config, ref string) sample {
	dir, err := os.MkdirTemp("", "ctd")
	check(err)
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	check(os.WriteFile(cfg, fmt.Appendf(nil, "version = 2\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock), 0o644))
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		exec.Command("sh", "-c", "grep -o '"+dir+"[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l").Run()
	}()
	for start := time.Now(); exec.Command("ctr", "--address", sock, "version").Run() != nil; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			fail("containerd did not start")
		}
	}
	return run(os.Environ(), c.work, "ctr", "--address", sock, "image", "pull", "--plain-http", ref)
}

func getJSON(url string, v any) {
	resp, err := http.Get(url)
	check(err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fail(url + ": " + resp.Status)
	}
	check(json.NewDecoder(resp.Body).Decode(v))
}

func dirBytes(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
