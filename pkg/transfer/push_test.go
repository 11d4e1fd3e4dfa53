package transfer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var testModel = map[string]string{
	"model.safetensors": strings.Repeat("w", 3000),
	"config.json":       `{"hidden_size": 64}`,
	"README.md":         "# test model\n",
}

func size(files []model.File) (n int64) {
	for _, f := range files {
		n += f.Size
	}
	return n
}

func push(t *testing.T, reg *testRegistry, repoTag string, files []model.File, opts PushOptions) *PushResult {
	t.Helper()
	repo, ref := connect(t, reg.host, repoTag)
	if opts.Retry.Attempts == 0 {
		opts.Retry = fastRetry
	}
	res, err := Push(context.Background(), repo, ref, files, opts)
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return res
}

// A push sends every file and the config, and the pull gets the same files
// back; pushing the same content under the same tag again sends nothing
// and says so; other content under that tag is refused before any upload.
func TestPushRepushAndImmutability(t *testing.T) {
	reg := newTestRegistry(t)
	dir, files := writeModel(t, testModel)
	first := push(t, reg, "team/m:1.0.0", files, PushOptions{Streamer: streamer(t, reg.host, "team/m")})
	if first.Unchanged || first.Files != 3 || first.Uploaded <= size(files) || first.Skipped != 0 {
		t.Errorf("first push: %+v", first)
	}

	repo, ref := connect(t, reg.host, "team/m:1.0.0")
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Pull(context.Background(), repo, ref, out, PullOptions{Retry: fastRetry}); err != nil {
		t.Fatal(err)
	}
	for name, content := range testModel {
		if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != content {
			t.Errorf("pulled %s: %q, %v", name, b, err)
		}
	}

	reg.reset()
	again := push(t, reg, "team/m:1.0.0", files, PushOptions{Streamer: streamer(t, reg.host, "team/m")})
	if !again.Unchanged || again.Digest != first.Digest || again.Uploaded != 0 || again.Skipped != size(files) {
		t.Errorf("identical re-push: %+v", again)
	}
	if up := reg.requests("/blobs/uploads/"); len(up) != 0 {
		t.Errorf("an identical re-push opened uploads: %v", up)
	}

	os.WriteFile(filepath.Join(dir, "README.md"), []byte("# changed\n"), 0o644)
	reg.reset()
	repo, ref = connect(t, reg.host, "team/m:1.0.0")
	_, err := Push(context.Background(), repo, ref, collect(t, dir), PushOptions{Retry: fastRetry, Streamer: streamer(t, reg.host, "team/m")})
	if err == nil || !strings.Contains(err.Error(), "already exists with digest "+first.Digest) || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("other content under an existing version: %v", err)
	}
	if up := reg.requests("/blobs/uploads/"); len(up) != 0 {
		t.Errorf("a refused push opened uploads: %v", up)
	}
}

// What is read before anything is sent, as the "hashed" line shows it: with
// the streaming uploader nothing is (files are hashed as they upload);
// without it every file is; a file the size of a base model's layer is
// (it may be mounted); when the tag exists every file the cache does not
// know is (the manifests are compared first).
func TestPushPlanHashesFirst(t *testing.T) {
	reg := newTestRegistry(t)
	_, files := writeModel(t, testModel)
	weights := slices.IndexFunc(files, func(f model.File) bool { return f.Path == "model.safetensors" })
	hashed := func(rec *recorder) string {
		for _, tr := range rec.tracks {
			if strings.HasPrefix(tr, "hashed ") {
				return tr
			}
		}
		return ""
	}
	cases := []struct {
		name string
		tag  string
		opts func(*PushOptions)
		want string
	}{
		{"streamed", "team/a:1.0.0", func(o *PushOptions) { o.Streamer = streamer(t, reg.host, "team/a") }, ""},
		{"no streamer", "team/b:1.0.0", func(*PushOptions) {}, "hashed 3 files " + itoa(size(files))},
		{"base model layer size", "team/c:1.0.0", func(o *PushOptions) {
			o.Streamer = streamer(t, reg.host, "team/c")
			o.BaseLayers = []ocispec.Descriptor{{Size: files[weights].Size}}
		}, "hashed 3 files " + itoa(files[weights].Size)},
		{"tag exists", "team/a:1.0.0", func(o *PushOptions) { o.Streamer = streamer(t, reg.host, "team/a") }, "hashed 3 files " + itoa(size(files))},
	}
	for _, c := range cases {
		rec := &recorder{}
		opts := PushOptions{Progress: rec}
		c.opts(&opts)
		push(t, reg, c.tag, files, opts)
		if got := hashed(rec); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// With the digest cache, a re-push as a new version reads no file and
// sends nothing but what changed: the unchanged blobs are found with HEAD.
func TestPushWithCacheSendsOnlyChanges(t *testing.T) {
	reg := newTestRegistry(t)
	dir, files := writeModel(t, testModel)
	cache := OpenDigestCache(filepath.Join(t.TempDir(), "digests.json"))
	push(t, reg, "team/m:1.0.0", files, PushOptions{Cache: cache, Streamer: streamer(t, reg.host, "team/m")})

	changed := "# changed README\n"
	os.WriteFile(filepath.Join(dir, "README.md"), []byte(changed), 0o644)
	future := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(dir, "README.md"), future, future) // a new mtime whatever the clock's resolution
	rec := &recorder{}
	reg.reset()
	res := push(t, reg, "team/m:1.1.0", collect(t, dir), PushOptions{Cache: cache, Progress: rec, Streamer: streamer(t, reg.host, "team/m")})
	for _, tr := range rec.tracks {
		if strings.HasPrefix(tr, "hashed ") {
			t.Errorf("files were read before the upload: %s", tr)
		}
	}
	wantSkipped := int64(len(testModel["model.safetensors"]) + len(testModel["config.json"]))
	if res.Skipped != wantSkipped || res.Uploaded <= int64(len(changed)) || res.Uploaded > int64(len(changed))+4096 {
		t.Errorf("re-push: skipped %d (want %d), uploaded %d (the file, %d bytes, and the config)", res.Skipped, wantSkipped, res.Uploaded, len(changed))
	}
	if patches := reg.requests("PATCH "); len(patches) != 1 {
		t.Errorf("%d files streamed, want 1 (the changed one): %v", len(patches), patches)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings: %v", res.Warnings)
	}
}

// A fine-tune pushed with its base model mounts the base's layers instead
// of sending them; a later push to a third repository mounts them from
// where the digest cache saw them go.
func TestPushMounts(t *testing.T) {
	reg := newTestRegistry(t)
	_, files := writeModel(t, testModel)
	base := push(t, reg, "team/base:1.0.0", files, PushOptions{Streamer: streamer(t, reg.host, "team/base")})

	var layers []ocispec.Descriptor
	repo, ref := connect(t, reg.host, "team/base:1.0.0")
	v, err := Fetch(context.Background(), repo, ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range v.Files {
		layers = append(layers, f.Descriptor)
	}
	cache := OpenDigestCache(filepath.Join(t.TempDir(), "digests.json"))
	reg.reset()
	tuned := push(t, reg, "team/tuned:1.0.0", files, PushOptions{
		Streamer: streamer(t, reg.host, "team/tuned"), Cache: cache,
		MountFrom: []string{reg.host + "/team/base"}, BaseLayers: layers,
	})
	if config := base.Uploaded - size(files); tuned.Mounted != size(files) || tuned.Uploaded != config {
		t.Errorf("fine-tune: mounted %d of %d bytes, uploaded %d (want the config alone, %d)", tuned.Mounted, size(files), tuned.Uploaded, config)
	}
	if m := reg.requests("POST /v2/team/tuned/blobs/uploads/", "from=team/base"); len(m) != 3 {
		t.Errorf("%d mount requests from team/base, want 3: %v", len(m), reg.requests())
	}

	third := push(t, reg, "team/third:1.0.0", files, PushOptions{Streamer: streamer(t, reg.host, "team/third"), Cache: cache})
	if third.Mounted != size(files) {
		t.Errorf("push to a third repository: mounted %d of %d bytes (the cache knows where they are)", third.Mounted, size(files))
	}
}

// Two files with the same content are one blob: sent once, the other
// counted as already there.
func TestPushSameContentOnce(t *testing.T) {
	reg := newTestRegistry(t)
	_, files := writeModel(t, map[string]string{"a.bin": "same bytes", "b.bin": "same bytes"})
	res := push(t, reg, "team/m:1.0.0", files, PushOptions{})
	if res.Skipped != int64(len("same bytes")) {
		t.Errorf("skipped %d, want %d", res.Skipped, len("same bytes"))
	}
	if puts := reg.requests("PUT /v2/team/m/blobs/uploads/"); len(puts) != 2 { // the blob and the config
		t.Errorf("%d blobs uploaded, want 2: %v", len(puts), puts)
	}
}

// A digest cache that cannot be written does not fail the push: the
// version is in the registry, and the result says why the next push will
// read every file again.
func TestPushCacheSaveFailureIsAWarning(t *testing.T) {
	reg := newTestRegistry(t)
	_, files := writeModel(t, testModel)
	blocker := filepath.Join(t.TempDir(), "not-a-directory")
	os.WriteFile(blocker, nil, 0o644)
	cache := OpenDigestCache(filepath.Join(blocker, "digests.json"))
	res := push(t, reg, "team/m:1.0.0", files, PushOptions{Cache: cache, Streamer: streamer(t, reg.host, "team/m")})
	if res.Digest == "" || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "digest cache was not saved") {
		t.Errorf("push with an unwritable cache: digest %q, warnings %q", res.Digest, res.Warnings)
	}
	repo, ref := connect(t, reg.host, "team/m:1.0.0")
	if v, err := Fetch(context.Background(), repo, ref); err != nil || v.Descriptor.Digest != digest.Digest(res.Digest) {
		t.Errorf("the version is not in the registry: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A retried push (a CI re-run) of the same files and metadata to an
// existing version succeeds as a no-op although "now" moved on; a push of
// other content is refused naming what differs.
func TestRepushIdempotentWithoutCreated(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	repo, ref := connect(t, reg.host, "team/idem:1.0.0")
	dir, files := writeModel(t, map[string]string{"model.safetensors": "weights"})
	first := model.Metadata{Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Metrics: map[string]float64{"accuracy": 0.9}}
	res, err := Push(ctx, repo, ref, files, PushOptions{Metadata: first, CreatedIsDefault: true})
	if err != nil {
		t.Fatal(err)
	}
	again := first
	again.Created = first.Created.Add(time.Hour)
	res2, err := Push(ctx, repo, ref, files, PushOptions{Metadata: again, CreatedIsDefault: true})
	if err != nil || !res2.Unchanged || res2.Digest != res.Digest {
		t.Fatalf("identical re-push without --created: %+v, %v", res2, err)
	}
	if _, err := Push(ctx, repo, ref, files, PushOptions{Metadata: again}); err == nil || !strings.Contains(err.Error(), "org.opencontainers.image.created") {
		t.Errorf("a chosen, different creation time: %v, want a refusal naming the created annotation", err)
	}
	other := first
	other.Metrics = map[string]float64{"accuracy": 0.95}
	if err := os.WriteFile(filepath.Join(dir, "extra.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	files2 := collect(t, dir)
	_, err = Push(ctx, repo, ref, files2, PushOptions{Metadata: other, CreatedIsDefault: true})
	if err == nil || !strings.Contains(err.Error(), "immutable") || !strings.Contains(err.Error(), "files added: extra.json") || !strings.Contains(err.Error(), `io.modelreg.metric.accuracy "0.9" (existing) vs "0.95"`) {
		t.Errorf("a push of other content: %v", err)
	}
}
