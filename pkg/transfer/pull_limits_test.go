package transfer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// limRegistry serves manifests and blobs from memory, the two reads a pull
// makes, so a test can hand Pull layers no honest producer would write.
type limRegistry struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	tags  map[string]digest.Digest
}

func (r *limRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	parts := strings.Split(req.URL.Path, "/")
	if len(parts) < 4 || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		http.NotFound(w, req)
		return
	}
	kind, ref := parts[len(parts)-2], parts[len(parts)-1]
	d, err := digest.Parse(ref)
	if err != nil {
		d = r.tags[ref]
	}
	b, ok := r.blobs[d]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"errors":[{"code":"%s_UNKNOWN","message":"unknown"}]}`, strings.ToUpper(strings.TrimSuffix(kind, "s")))
		return
	}
	if kind == "manifests" {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	if req.Method == http.MethodGet {
		w.Write(b)
	}
}

// limLayer is one layer of a hand-made version.
type limLayer struct {
	mediaType string
	path      string // the filepath annotation; "" for none
	mode      string // the file mode annotation; "" for none
	content   []byte
}

// limServe starts a registry holding a model version made of layers, and
// returns the repository and the reference to pull, plus the layers' digests.
func limServe(t *testing.T, layers ...limLayer) (registry.Repository, registry.Reference, []digest.Digest) {
	t.Helper()
	reg := &limRegistry{blobs: map[digest.Digest][]byte{}, tags: map[string]digest.Digest{}}
	put := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		reg.blobs[d] = b
		return d
	}
	cfg := []byte("{}")
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: mediatypes.ArtifactTypeModel,
		Config:       ocispec.Descriptor{MediaType: mediatypes.ModelConfig, Digest: put(cfg), Size: int64(len(cfg))}}
	var ds []digest.Digest
	for _, l := range layers {
		desc := ocispec.Descriptor{MediaType: l.mediaType, Digest: put(l.content), Size: int64(len(l.content)), Annotations: map[string]string{}}
		if l.path != "" {
			desc.Annotations[mediatypes.AnnotationFilepath] = l.path
		}
		if l.mode != "" {
			desc.Annotations[mediatypes.AnnotationFileMode] = l.mode
		}
		m.Layers = append(m.Layers, desc)
		ds = append(ds, desc.Digest)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	reg.tags["1.0.0"] = put(raw)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	repo, err := remote.NewRepository(host + "/team/evil")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	ref, err := registry.ParseReference(host + "/team/evil:1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	return repo, ref, ds
}

// limPull pulls ref into a new directory under a fresh parent, with a
// deadline so that a pull that does not stop fails the test instead of
// filling the disk.
func limPull(t *testing.T, repo registry.Repository, ref registry.Reference, opts PullOptions) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "model")
	_, err := Pull(ctx, repo, ref, dir, opts)
	return dir, err
}

// limRefused checks that a pull failed with every wanted fragment in its
// message and left nothing: no destination, no temporary directory.
func limRefused(t *testing.T, dir string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("pull succeeded, want a refusal mentioning %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
	if _, serr := os.Stat(dir); serr == nil {
		t.Errorf("%s exists after a refused pull", dir)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range entries {
		t.Errorf("%s left behind beside the destination", e.Name())
	}
}

var (
	limRaw     = mediatypes.Layer(mediatypes.LayerWeight, mediatypes.EncodingRaw)
	limTar     = mediatypes.Layer(mediatypes.LayerDataset, mediatypes.EncodingTar)
	limTarGzip = mediatypes.Layer(mediatypes.LayerDataset, mediatypes.EncodingTarGzip)
	limTarZstd = mediatypes.Layer(mediatypes.LayerDataset, mediatypes.EncodingTarZstd)
)

// limEntry is one tar entry: a directory when its name ends in "/".
type limEntry struct {
	name    string
	mode    int64
	content string
}

func limTarball(t *testing.T, entries ...limEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.content)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func limGzip(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// limZerosBomb is a tar+gzip layer holding one file of zeros, about 1028
// times the layer's size: one gzip member with the tar header, then copies
// of one member of 64 MiB of zeros (a gzip stream may hold several
// members), so building a 10 GiB bomb costs one 64 MiB compression. The
// zeros end with the tar's end-of-archive blocks.
func limZerosBomb(t *testing.T, name string, chunks int) (layer []byte, declared int64) {
	t.Helper()
	const chunk = 64 << 20
	zeros := limGzip(t, make([]byte, chunk))
	declared = int64(chunks)*chunk - 1024
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: declared, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	out := limGzip(t, hdr.Bytes())
	for range chunks {
		out = append(out, zeros...)
	}
	return out, declared
}

// A 10 MiB tar+gzip layer that unpacks to 10 GiB of zeros is refused by the
// default ratio bound, from the tar header, before a byte of it is written.
func TestPullRefusesGzipBomb(t *testing.T) {
	bomb, declared := limZerosBomb(t, "data/zeros.bin", 161)
	if len(bomb) < 10<<20 || declared < 10<<30 {
		t.Fatalf("bomb is %d bytes unpacking to %d, want about 10 MiB to 10 GiB", len(bomb), declared)
	}
	repo, ref, ds := limServe(t,
		limLayer{mediaType: limRaw, path: "model.safetensors", content: []byte("weights")},
		limLayer{mediaType: limTarGzip, path: "data", content: bomb})
	start := time.Now()
	dir, err := limPull(t, repo, ref, PullOptions{})
	limRefused(t, dir, err, ds[1].String(), `"data/zeros.bin"`, "decompression bomb", "1000 times its size", "--max-expand-ratio")
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("refusing the bomb took %s: it was unpacked, not refused from its header", d)
	}
}

// A bomb made of many files, each small, is stopped by the sum of their
// sizes; past the ratio, the absolute bound names its own flag.
func TestPullRefusesManyFileBomb(t *testing.T) {
	var entries []limEntry
	mib := strings.Repeat("\x00", 1<<20)
	for i := range 40 {
		entries = append(entries, limEntry{name: fmt.Sprintf("shard-%02d.bin", i), content: mib})
	}
	layer := limGzip(t, limTarball(t, entries...))
	repo, ref, ds := limServe(t, limLayer{mediaType: limTarGzip, content: layer})

	dir, err := limPull(t, repo, ref, PullOptions{MaxExpandRatio: 100})
	limRefused(t, dir, err, ds[0].String(), "decompression bomb", "100 times its size", "--max-expand-ratio")

	dir, err = limPull(t, repo, ref, PullOptions{MaxExpandBytes: 8 << 20})
	limRefused(t, dir, err, ds[0].String(), "its size plus 8.0 MiB", "--max-expand-bytes")

	// Raised (or removed) bounds let the same layer through.
	dir, err = limPull(t, repo, ref, PullOptions{MaxExpandRatio: -1, MaxExpandBytes: 64 << 20})
	if err != nil {
		t.Fatalf("raised bounds: %v", err)
	}
	if info, err := os.Stat(filepath.Join(dir, "shard-39.bin")); err != nil || info.Size() != 1<<20 {
		t.Errorf("shard-39.bin after pull: %v %v", info, err)
	}
}

// The tar's own bytes (headers, padding) count too: thousands of empty
// files decompress to megabytes though they hold no data.
func TestPullBoundsTarOverhead(t *testing.T) {
	var entries []limEntry
	for i := range 5000 {
		entries = append(entries, limEntry{name: fmt.Sprintf("e/%05d", i)})
	}
	layer := limGzip(t, limTarball(t, entries...))
	repo, ref, ds := limServe(t, limLayer{mediaType: limTarGzip, content: layer})
	dir, err := limPull(t, repo, ref, PullOptions{MaxExpandRatio: 2})
	limRefused(t, dir, err, ds[0].String(), "decompresses beyond 1.0 MiB", "--max-expand-ratio")
}

// A tar layer may hold at most MaxEntries entries, directories included.
func TestPullRefusesTooManyEntries(t *testing.T) {
	entries := []limEntry{{name: "d/"}}
	for i := range 999 {
		entries = append(entries, limEntry{name: fmt.Sprintf("d/%03d", i), content: "x"})
	}
	ok := limGzip(t, limTarball(t, entries...))
	tooMany := limGzip(t, limTarball(t, append(entries, limEntry{name: "d/one-more", content: "x"})...))

	repo, ref, _ := limServe(t, limLayer{mediaType: limTarGzip, content: ok})
	if _, err := limPull(t, repo, ref, PullOptions{MaxEntries: 1000}); err != nil {
		t.Fatalf("1000 entries under a bound of 1000: %v", err)
	}
	repo, ref, ds := limServe(t, limLayer{mediaType: limTarGzip, content: tooMany})
	dir, err := limPull(t, repo, ref, PullOptions{MaxEntries: 1000})
	limRefused(t, dir, err, ds[0].String(), "more than 1000 tar entries", "--max-entries")
}

// The default entry bound is what the docs and the CLI say it is.
func TestPullDefaultBounds(t *testing.T) {
	if DefaultMaxExpandRatio != 1000 || DefaultMaxExpandBytes != 64<<30 || DefaultMaxEntries != 1_000_000 {
		t.Errorf("defaults changed (%d, %d, %d): update docs/format.md and docs/cli.md",
			DefaultMaxExpandRatio, DefaultMaxExpandBytes, DefaultMaxEntries)
	}
	p := &puller{opts: PullOptions{MaxExpandRatio: DefaultMaxExpandRatio, MaxExpandBytes: DefaultMaxExpandBytes}}
	for _, c := range []struct {
		size, limit int64
		flag        string
	}{
		{100, 1 << 20, "--max-expand-ratio"},                // tiny tars may always reach 1 MiB
		{10 << 20, 10000 << 20, "--max-expand-ratio"},       // 10 MiB: 1000 times
		{1 << 30, 1<<30 + 64<<30, "--max-expand-bytes"},     // 1 GiB: its size plus 64 GiB
		{200 << 30, 200<<30 + 64<<30, "--max-expand-bytes"}, // weights: never below their own size
		{1 << 62, 1<<62 + 64<<30, "--max-expand-bytes"},     // no overflow
	} {
		if limit, flag := p.expandLimit(limFile(c.size)); limit != c.limit || flag != c.flag {
			t.Errorf("size %d: limit %d (%s), want %d (%s)", c.size, limit, flag, c.limit, c.flag)
		}
	}
}

// tar+zstd layers are unpacked, under the same bounds as gzip.
func TestPullTarZstd(t *testing.T) {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := zw.EncodeAll(limTarball(t, limEntry{name: "tok/"}, limEntry{name: "tok/vocab.txt", content: "a b c"}), nil)
	repo, ref, _ := limServe(t, limLayer{mediaType: limTarZstd, content: good})
	dir, err := limPull(t, repo, ref, PullOptions{})
	if err != nil {
		t.Fatalf("tar+zstd: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "tok", "vocab.txt")); err != nil || string(b) != "a b c" {
		t.Errorf("tok/vocab.txt: %q %v", b, err)
	}

	// 1 GiB of zeros: zstd compresses it 30000 times, far beyond the ratio.
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: "zeros.bin", Mode: 0o644, Size: 1<<30 - 1024, Typeflag: tar.TypeReg})
	tw.Flush()
	bomb := zw.EncodeAll(hdr.Bytes(), nil)
	frame := zw.EncodeAll(make([]byte, 64<<20), nil)
	for range 16 {
		bomb = append(bomb, frame...)
	}
	repo, ref, ds := limServe(t, limLayer{mediaType: limTarZstd, content: bomb})
	dir, err = limPull(t, repo, ref, PullOptions{})
	limRefused(t, dir, err, ds[0].String(), "tar+zstd", "decompression bomb", "--max-expand-ratio")
}

// A path is written by one layer only: a raw layer and a tar, two tars, or
// one tar twice are refused with the path and both layers named, whatever
// order the layers are written in. Directories may repeat.
func TestPullRefusesDuplicatePaths(t *testing.T) {
	raw := limLayer{mediaType: limRaw, path: "config.json", content: []byte(`{"a":1}`)}
	tarCfg := limLayer{mediaType: limTarGzip, path: "extra", content: limGzip(t, limTarball(t, limEntry{name: "config.json", content: `{"evil":1}`}))}
	tarA := limLayer{mediaType: limTar, path: "a", content: limTarball(t, limEntry{name: "w/"}, limEntry{name: "w/x.bin", content: "A"})}
	tarB := limLayer{mediaType: limTarGzip, path: "b", content: limGzip(t, limTarball(t, limEntry{name: "w/"}, limEntry{name: "w/x.bin", content: "B"}))}
	twice := limLayer{mediaType: limTarGzip, path: "t", content: limGzip(t, limTarball(t, limEntry{name: "x", content: "1"}, limEntry{name: "x", content: "2"}))}
	fileDir := limLayer{mediaType: limTar, path: "c", content: limTarball(t, limEntry{name: "w", content: "a file where b has a directory"})}

	for _, c := range []struct {
		name   string
		layers []limLayer
		path   string
		want   []int // the layers the message names, in manifest order
	}{
		{"raw then tar", []limLayer{raw, tarCfg}, "config.json", []int{0, 1}},
		{"tar then raw", []limLayer{tarCfg, raw}, "config.json", []int{0, 1}},
		{"two tars", []limLayer{tarA, tarB}, "w/x.bin", []int{0, 1}},
		{"two tars reversed", []limLayer{tarB, tarA}, "w/x.bin", []int{0, 1}},
		{"one tar twice", []limLayer{twice}, "x", []int{0}},
		{"file and directory", []limLayer{fileDir, tarB}, "w", []int{0, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo, ref, ds := limServe(t, c.layers...)
			for _, conc := range []int{1, 8} { // one at a time, in manifest order, and all at once
				for range 3 {
					dir, err := limPull(t, repo, ref, PullOptions{Concurrency: conc})
					want := []string{fmt.Sprintf("%q", c.path)}
					for _, i := range c.want {
						want = append(want, fmt.Sprintf("layer %d (", i), ds[i].String())
					}
					limRefused(t, dir, err, want...)
				}
			}
		})
	}

	// The same directory in two tars, and distinct files, are fine.
	tarC := limLayer{mediaType: limTarGzip, path: "c", content: limGzip(t, limTarball(t, limEntry{name: "w/"}, limEntry{name: "w/y.bin", content: "C"}))}
	repo, ref, _ := limServe(t, raw, tarA, tarC)
	dir, err := limPull(t, repo, ref, PullOptions{})
	if err != nil {
		t.Fatalf("a directory in two tars: %v", err)
	}
	for p, want := range map[string]string{"config.json": `{"a":1}`, "w/x.bin": "A", "w/y.bin": "C"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v", p, b, err)
		}
	}
}

// setuid, setgid and sticky bits in a tar header are dropped: only the
// permission bits are restored.
func TestPullDropsSpecialModeBits(t *testing.T) {
	layer := limGzip(t, limTarball(t,
		limEntry{name: "bin/", mode: 0o2755},
		limEntry{name: "bin/run", mode: 0o4755, content: "#!/bin/sh\n"},
		limEntry{name: "bin/group", mode: 0o2750, content: "g"},
		limEntry{name: "bin/sticky", mode: 0o1777, content: "s"}))
	repo, ref, _ := limServe(t,
		limLayer{mediaType: limTarGzip, path: "bin", content: layer},
		limLayer{mediaType: limRaw, path: "tool.sh", mode: "0755", content: []byte("#!/bin/sh\n")})
	dir, err := limPull(t, repo, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{"bin/run": 0o755, "bin/group": 0o750, "bin/sticky": 0o777, "tool.sh": 0o755} {
		info, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 || info.Mode().Perm() != want {
			t.Errorf("%s: mode %s, want %s without setuid, setgid or sticky", p, info.Mode(), want)
		}
	}
	info, err := os.Stat(filepath.Join(dir, "bin"))
	if err != nil || info.Mode()&(fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) != 0 {
		t.Errorf("bin/: %v %v", info.Mode(), err)
	}

	// A mode annotation with a special bit is refused before anything is written.
	repo, ref, _ = limServe(t, limLayer{mediaType: limRaw, path: "tool.sh", mode: "4755", content: []byte("x")})
	dir, err = limPull(t, repo, ref, PullOptions{})
	limRefused(t, dir, err, "io.modelreg.file.mode", `"4755"`)
}

func limFile(size int64) (f model.FileEntry) {
	f.Encoding = mediatypes.EncodingTarGzip
	f.Descriptor.Size = size
	return f
}
