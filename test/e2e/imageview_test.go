package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/transfer"
)

// debTool finds one of Debian's container tools, which `make test`
// installs (deb-tools); a machine without them fails here, naming the fix.
func debTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run `make deb-tools` (containerd, skopeo, umoci from Debian), as `make test` does", name)
	}
	return p
}

// containerd runs Debian's containerd as root with its own root, state and
// socket under a temp dir, until the test ends; it returns the socket.
func containerd(t *testing.T) string {
	t.Helper()
	bin := debTool(t, "containerd")
	debTool(t, "ctr")
	dir, err := os.MkdirTemp("", "ctd") // short: a socket path must stay under 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock), 0o644)
	cmd := exec.Command(bin, "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		// Snapshots may hold mounts of their own: unmount before removing.
		exec.Command("sh", "-c", "grep -o '"+dir+"[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l").Run()
		os.RemoveAll(dir)
	})
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		if exec.Command("ctr", "--address", sock, "version").Run() == nil {
			return sock
		}
	}
	b, _ := os.ReadFile(logs.Name())
	t.Fatalf("containerd did not start:\n%s", b)
	return ""
}

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// modelTree writes a small model with a nested executable file.
func modelTree(t *testing.T, dir string) map[string]string {
	writeRandom(t, filepath.Join(dir, "model.safetensors"), 5<<20+3, 31)
	writeFile(t, filepath.Join(dir, "config.json"), `{"hidden": 64}`, 0o644)
	writeFile(t, filepath.Join(dir, "scripts", "serve.sh"), "#!/bin/sh\nexec python serve.py\n", 0o755)
	return tree(t, dir)
}

// tarTree reads a flattened image filesystem (crane export) as a tree of
// the files under models/.
func tarTree(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		rest, ok := strings.CutPrefix(h.Name, "models/")
		if !ok {
			t.Errorf("%s is outside models/", h.Name)
			continue
		}
		hs := sha256.New()
		io.Copy(hs, tr)
		out[rest] = fmt.Sprintf("%04o %x", h.Mode&0o777, hs.Sum(nil))
	}
}

// The image view of a version pushed to plain distribution with --image is
// what container tools see as an ordinary image: containerd pulls and
// mounts it, crane exports it, skopeo and umoci unpack it, each giving the
// version's files under models/, byte for byte with their modes. The same
// version pushed to modelreg serve, and the view written later from the
// registry's blobs, have the same digest.
func TestImageView(t *testing.T) {
	plain := startPlainRegistry(t)
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	want := modelTree(t, src)
	created := "2026-05-01T00:00:00Z"

	res := decode[transfer.PushResult](t, e.ok("push", plain.Addr+"/team/iv:1.0.0", src, "--image", "--created", created, "--output", "json").Stdout)
	if !strings.HasPrefix(res.Image, plain.Addr+"/team/iv@sha256:") || res.ImageSent <= res.Size-1024 {
		t.Fatalf("push --image: image %q, %d tar bytes sent for %d bytes of model", res.Image, res.ImageSent, res.Size)
	}
	ref := res.Image
	if got := strings.TrimSpace(e.ok("image", plain.Addr+"/team/iv:1.0.0").Stdout); got != ref {
		t.Errorf("modelreg image printed %q, push said %q", got, ref)
	}

	t.Run("crane export", func(t *testing.T) {
		out := tool(t, craneBin, "export", "--insecure", ref, "-")
		sameTree(t, want, tarTree(t, strings.NewReader(out)))
	})
	t.Run("ctr pull and mount", func(t *testing.T) {
		sock := containerd(t)
		tool(t, "ctr", "--address", sock, "image", "pull", "--plain-http", ref)
		mnt := t.TempDir()
		tool(t, "ctr", "--address", sock, "image", "mount", ref, mnt)
		defer tool(t, "ctr", "--address", sock, "image", "unmount", mnt)
		sameTree(t, want, tree(t, filepath.Join(mnt, "models")))
	})
	t.Run("skopeo copy and umoci unpack", func(t *testing.T) {
		layout := filepath.Join(t.TempDir(), "oci")
		tool(t, debTool(t, "skopeo"), "copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":view")
		bundle := filepath.Join(t.TempDir(), "bundle")
		tool(t, debTool(t, "umoci"), "unpack", "--rootless", "--image", layout+":view", bundle)
		sameTree(t, want, tree(t, filepath.Join(bundle, "rootfs", "models")))
	})

	// Same version elsewhere: same view digest.
	other := decode[transfer.PushResult](t, e.ok("push", reg.Addr+"/lab/copy:1.0.0", src, "--image", "--created", created, "--output", "json").Stdout)
	if other.Digest != res.Digest {
		t.Fatalf("the version's digest differs between registries: %s, %s", other.Digest, res.Digest)
	}
	_, viewDigest, _ := strings.Cut(ref, "@")
	if _, d, _ := strings.Cut(other.Image, "@"); d != viewDigest {
		t.Errorf("the image view of one version has two digests: %s (plain distribution), %s (modelreg serve)", viewDigest, d)
	}
	// Written afterwards from the registry's blobs: the same again.
	e.ok("push", plain.Addr+"/team/late:1.0.0", src, "--created", created)
	e.fails([]string{"no image view", "modelreg image --write"}, "image", plain.Addr+"/team/late:1.0.0")
	late := decode[client.ImageView](t, e.ok("image", "--write", plain.Addr+"/team/late:1.0.0", "--output", "json").Stdout)
	if late.Digest != viewDigest || late.Sent == 0 {
		t.Errorf("image --write: %+v; want digest %s with bytes sent", late, viewDigest)
	}
	again := decode[client.ImageView](t, e.ok("image", "--write", plain.Addr+"/team/late:1.0.0", "--output", "json").Stdout)
	if again.Digest != viewDigest || again.Sent != 0 {
		t.Errorf("image --write of a view already there: %+v; want it found, nothing sent", again)
	}
}
