package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// busyboxBase builds the modelcar base image the way an operator would: a
// single layer with Debian's busybox-static and its sh, ln, sleep, cat and
// ls, plus /mnt and /tmp. It returns the image's blobs and manifest.
func busyboxBase(t *testing.T) (layer, config, manifest []byte) {
	t.Helper()
	bin, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is not installed: run `make deb-tools` (busybox-static from Debian)")
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	static := f.Section(".interp") == nil
	f.Close()
	if !static {
		t.Fatalf("%s is not statically linked: install Debian's busybox-static (`make deb-tools`)", bin)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var lb bytes.Buffer
	tw := tar.NewWriter(&lb)
	for _, d := range []string{"bin/", "mnt/", "tmp/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(b))})
	tw.Write(b)
	for _, l := range []string{"sh", "ln", "sleep", "cat", "ls"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + l, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	tw.Close()
	layer = lb.Bytes()
	config, _ = json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(layer)}},
		History:  []ocispec.History{{CreatedBy: "busybox-static from Debian"}},
	})
	manifest, _ = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	})
	return layer, config, manifest
}

// With an operator's base image, modelreg serve serves each version as a
// modelcar (<repo>/modelcar): the base's shell under the version's files at
// /models. containerd pulls and mounts it, and the shell in it does what
// KServe's modelcar sidecar does (link /models and read through the link).
// Writes are refused, inspect lists the base, and a registry without a base
// says how to configure one.
func TestModelcar(t *testing.T) {
	layer, config, manifest := busyboxBase(t)
	baseDigest := digest.FromBytes(manifest)
	reg := startServer(t, "--modelcar-base", "base/busybox@"+baseDigest.String())
	ctx := context.Background()
	br, err := orasremote.NewRepository(reg.Addr + "/base/busybox")
	if err != nil {
		t.Fatal(err)
	}
	br.PlainHTTP = true
	for _, b := range []struct {
		mt   string
		data []byte
	}{{ocispec.MediaTypeImageLayer, layer}, {ocispec.MediaTypeImageConfig, config}, {ocispec.MediaTypeImageManifest, manifest}} {
		if err := br.Push(ctx, ocispec.Descriptor{MediaType: b.mt, Digest: digest.FromBytes(b.data), Size: int64(len(b.data))}, bytes.NewReader(b.data)); err != nil {
			t.Fatal(err)
		}
	}

	e := newEnv(t)
	src := filepath.Join(e.dir, "m")
	want := modelTree(t, src)
	repo := reg.Addr + "/team/mc"
	e.ok("push", repo+":1.0.0", src)
	ref := strings.TrimSpace(e.ok("image", "--modelcar", repo+":1.0.0").Stdout)
	if !strings.HasPrefix(ref, repo+"/modelcar@sha256:") {
		t.Fatalf("image --modelcar printed %q", ref)
	}
	in := decode[struct{ Modelcar, ModelcarBase string }](t, e.ok("inspect", repo+":1.0.0", "--output", "json").Stdout)
	if in.Modelcar != ref || in.ModelcarBase != reg.Addr+"/base/busybox@"+baseDigest.String() {
		t.Errorf("inspect: modelcar %q base %q", in.Modelcar, in.ModelcarBase)
	}

	sock := containerd(t)
	tool(t, "ctr", "--address", sock, "image", "pull", "--plain-http", repo+"/modelcar:1.0.0")
	mnt := t.TempDir()
	tool(t, "ctr", "--address", sock, "image", "mount", "--rw", repo+"/modelcar:1.0.0", mnt) // writable, as a container's root is
	defer tool(t, "ctr", "--address", sock, "image", "unmount", mnt)
	sameTree(t, want, tree(t, filepath.Join(mnt, "models")))
	// What KServe's modelcar sidecar runs: sh, ln, a read through the link.
	out, err := exec.Command("chroot", mnt, "/bin/sh", "-c", "ln -s /models /mnt/models && cat /mnt/models/config.json && sleep 0").CombinedOutput()
	if err != nil || string(out) != `{"hidden": 64}` {
		t.Errorf("the modelcar's shell: %v, %q", err, out)
	}
	if r := e.exec("", nil, craneBin, "copy", "--insecure", repo+":1.0.0", repo+"/modelcar:9.9.9"); r.Code == 0 {
		t.Error("a copy into the modelcar repository was accepted")
	}

	plain := startServer(t)
	e.ok("push", plain.Addr+"/team/mc:1.0.0", src)
	e.fails([]string{"--modelcar-base"}, "image", "--modelcar", plain.Addr+"/team/mc:1.0.0")
}
