package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/imageview"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/transfer"
	orasremote "oras.land/oras-go/v2/registry/remote"
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
	if in := decode[struct{ Image string }](t, e.ok("inspect", plain.Addr+"/team/iv:1.0.0", "--output", "json").Stdout); in.Image != ref {
		t.Errorf("inspect says image %q, want %q", in.Image, ref)
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

// dataBytes is the bytes under a data directory: blobs (docker/) and the
// rest (the index, modelreg's own files).
func dataBytes(t *testing.T, dir string) (blobs, all int64) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		all += info.Size()
		if strings.Contains(p, string(filepath.Separator)+"docker"+string(filepath.Separator)) {
			blobs += info.Size()
		}
		return nil
	})
	return blobs, all
}

// modelreg serve derives every version's image view, served from
// <repo>/image without a copy of the weights: containerd pulls and mounts
// it byte for byte, its digest is the one a client writes on any other
// registry, the stage reference follows promotions and a rollback, range
// requests are answered, nothing can be written to it, and serving it
// grows storage by less than 1% of the version.
func TestServedImageView(t *testing.T) {
	reg := startServer(t)
	plain := startPlainRegistry(t)
	e := newEnv(t)
	created := "2026-05-01T00:00:00Z"
	v1 := filepath.Join(e.dir, "v1")
	modelTree(t, v1)
	writeRandom(t, filepath.Join(v1, "model.safetensors"), 64<<20, 41) // large enough that 1% is more than the index's pages
	want := tree(t, v1)
	v2 := filepath.Join(e.dir, "v2")
	modelTree(t, v2)
	repo := reg.Addr + "/team/served"
	e.ok("push", repo+":1.0.0", v1, "--created", created)
	e.ok("push", repo+":2.0.0", v2, "--created", created)
	blobsBefore, allBefore := dataBytes(t, reg.Data)

	ref := strings.TrimSpace(e.ok("image", repo+":1.0.0").Stdout)
	if !strings.HasPrefix(ref, repo+"/image@sha256:") {
		t.Fatalf("modelreg image printed %q, want %s/image@sha256:…", ref, repo)
	}
	if in := decode[struct{ Image string }](t, e.ok("inspect", repo+":1.0.0", "--output", "json").Stdout); in.Image != ref {
		t.Errorf("inspect says image %q, want %q", in.Image, ref)
	}
	// The same version's view written by the client on plain distribution.
	written := decode[transfer.PushResult](t, e.ok("push", plain.Addr+"/team/served:1.0.0", v1, "--created", created, "--image", "--output", "json").Stdout)
	_, d1, _ := strings.Cut(ref, "@")
	if _, d, _ := strings.Cut(written.Image, "@"); d != d1 {
		t.Errorf("served view %s, client-written view %s: one version, two digests", d1, d)
	}

	sock := containerd(t)
	tool(t, "ctr", "--address", sock, "image", "pull", "--plain-http", repo+"/image:1.0.0")
	mnt := t.TempDir()
	tool(t, "ctr", "--address", sock, "image", "mount", repo+"/image:1.0.0", mnt)
	sameTree(t, want, tree(t, filepath.Join(mnt, "models")))
	tool(t, "ctr", "--address", sock, "image", "unmount", mnt)
	// A node of another platform takes its own manifest of the view, with
	// the same files.
	tool(t, "ctr", "--address", sock, "image", "pull", "--plain-http", "--platform", "linux/arm64", repo+"/image:1.0.0")
	mnt = t.TempDir()
	tool(t, "ctr", "--address", sock, "image", "mount", "--platform", "linux/arm64", repo+"/image:1.0.0", mnt)
	sameTree(t, want, tree(t, filepath.Join(mnt, "models")))
	tool(t, "ctr", "--address", sock, "image", "unmount", mnt)

	// A range of the weights' tar layer: header (models/, the file) then bytes.
	var m struct{ Layers []struct{ Digest string } }
	if err := json.Unmarshal([]byte(tool(t, craneBin, "manifest", "--insecure", "--platform", "linux/amd64", ref)), &m); err != nil {
		t.Fatal(err)
	}
	weights, _ := os.ReadFile(filepath.Join(v1, "model.safetensors"))
	ranged := false
	for _, l := range m.Layers {
		req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Addr+"/v2/team/served/image/blobs/"+l.Digest, nil)
		req.Header.Set("Range", "bytes=1024-2047")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent {
			t.Errorf("range of %s: %d", l.Digest, resp.StatusCode)
		}
		ranged = ranged || bytes.Equal(b, weights[:1024])
	}
	if !ranged {
		t.Error("no layer answered bytes 1024-2047 with the weights' first KiB")
	}

	// Serving the views stored no blob, and grew the data directory (the
	// index's tar digests) by less than 1% of the version.
	blobsAfter, allAfter := dataBytes(t, reg.Data)
	size := int64(64 << 20)
	t.Logf("storage: blobs %d -> %d bytes, all %d -> %d bytes, for a %d-byte version and its served view", blobsBefore, blobsAfter, allBefore, allAfter, size)
	if blobsAfter != blobsBefore {
		t.Errorf("serving the views changed the blobs stored by %d bytes", blobsAfter-blobsBefore)
	}
	if grew := allAfter - allBefore; grew*100 > size {
		t.Errorf("serving the views grew the data directory by %d bytes, over 1%% of the %d-byte version", grew, size)
	}

	// The stage reference follows promotions and the rollback.
	d2 := strings.TrimPrefix(strings.TrimSpace(e.ok("image", repo+":2.0.0").Stdout), repo+"/image@")
	stageView := func() string {
		return strings.TrimSpace(tool(t, craneBin, "digest", "--insecure", repo+"/image:production"))
	}
	e.ok("promote", repo+":1.0.0", "--to", "production")
	if got := stageView(); got != d1 {
		t.Errorf("after promoting 1.0.0, image:production is %s, want %s", got, d1)
	}
	e.ok("promote", repo+":2.0.0", "--to", "production")
	if got := stageView(); got != d2 {
		t.Errorf("after promoting 2.0.0, image:production is %s, want %s", got, d2)
	}
	e.ok("rollback", repo, "--stage", "production")
	if got := stageView(); got != d1 {
		t.Errorf("after the rollback, image:production is %s, want %s", got, d1)
	}

	// Nothing is written to a view repository, by any client.
	if out, err := exec.Command(craneBin, "copy", "--insecure", repo+":2.0.0", repo+"/image:9.9.9").CombinedOutput(); err == nil || !strings.Contains(string(out), "DENIED") {
		t.Errorf("crane copy into the view repository: %v\n%s", err, out)
	}
	e.fails([]string{"image views"}, "push", repo+"/image:3.0.0", v1)
}

// A view a registry holds that the version's files do not make (a forged
// or damaged one) is refused by image --check; the real one passes.
func TestImageViewCheck(t *testing.T) {
	plain := startPlainRegistry(t)
	reg := startServer(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	modelTree(t, src)
	// The real view passes, on modelreg serve and on plain distribution.
	e.ok("push", reg.Addr+"/team/chk:1.0.0", src)
	if got := strings.TrimSpace(e.ok("image", "--check", reg.Addr+"/team/chk:1.0.0").Stdout); !strings.HasPrefix(got, reg.Addr+"/team/chk/image@") {
		t.Errorf("image --check on modelreg serve printed %q", got)
	}
	e.ok("push", plain.Addr+"/team/real:1.0.0", src, "--image")
	e.ok("image", "--check", plain.Addr+"/team/real:1.0.0")

	// A forged view: the version's annotations and subject, other bytes.
	e.ok("push", plain.Addr+"/team/forged:1.0.0", src)
	ctx := context.Background()
	repo, err := orasremote.NewRepository(plain.Addr + "/team/forged")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	desc, rc, err := repo.FetchReference(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(rc)
	rc.Close()
	v, err := model.Parse(desc, raw)
	if err != nil {
		t.Fatal(err)
	}
	var srcs []imageview.Source
	for _, f := range v.Files {
		content := []byte("not the weights")
		if f.Path != "model.safetensors" {
			content, _ = os.ReadFile(filepath.Join(src, filepath.FromSlash(f.Path)))
		}
		srcs = append(srcs, imageview.Source{
			File: imageview.File{Path: f.Path, Mode: f.Mode, Size: int64(len(content)), Raw: f.Descriptor.Digest},
			Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content)), nil },
		})
	}
	if _, err := imageview.Push(ctx, repo, v.Descriptor, srcs, 2); err != nil {
		t.Fatal(err)
	}
	e.ok("image", plain.Addr+"/team/forged:1.0.0") // found: it claims to be the view
	e.fails([]string{"do not deploy it"}, "image", "--check", plain.Addr+"/team/forged:1.0.0")

	// sign signs a view on another registry only after recomputing it: the
	// real one is signed (and cosign verifies it there), the forged one is not.
	e.ok("keygen", "--output-key-prefix", "alice")
	s := decode[client.Signed](t, e.ok("sign", plain.Addr+"/team/real:1.0.0", "--key", "alice.key", "--output", "json").Stdout)
	if !strings.HasPrefix(s.Image, plain.Addr+"/team/real@sha256:") || s.ImageSignature == "" {
		t.Fatalf("sign on plain distribution: %+v", s)
	}
	e.cosign(cosign3Bin, nil, "verify", "--key", "alice.pub", "--insecure-ignore-tlog=true", s.Image)
	e.fails([]string{"not its image view", "do not deploy it"}, "sign", plain.Addr+"/team/forged:1.0.0", "--key", "alice.key")
}
