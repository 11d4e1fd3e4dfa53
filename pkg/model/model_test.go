package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestClassify(t *testing.T) {
	for in, want := range map[string]string{
		"model-00001-of-00004.safetensors": KindWeight, "llama.Q4_K_M.gguf": KindWeight, "pytorch_model.bin": KindWeight,
		"model.onnx": KindWeight, "config.json": KindWeightConfig, "tokenizer.model": KindWeightConfig,
		"merges.txt": KindWeightConfig, "README.md": KindDoc, "LICENSE": KindDoc, "train.py": KindCode,
		"requirements.txt": KindCode, "Dockerfile": KindCode, "eval/holdout.parquet": KindDataset,
	} {
		if got := Classify(in); got != want {
			t.Errorf("Classify(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	write := func(p string, mode os.FileMode) {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(p), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("m/w.safetensors", 0o644)
	write("m/sub/run.sh", 0o755)
	write("m/data.bin", 0o644)
	write("extra.md", 0o600)
	os.Symlink("w.safetensors", filepath.Join(dir, "m", "link.safetensors"))

	rules, err := ParseRules([]string{"*.bin=dataset"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := Collect([]string{filepath.Join(dir, "m"), filepath.Join(dir, "extra.md")}, rules)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Path+":"+f.Kind+":"+f.Mode.String())
	}
	want := "data.bin:dataset:-rw-r--r-- extra.md:doc:-rw------- link.safetensors:weight:-rw-r--r-- sub/run.sh:code:-rwxr-xr-x w.safetensors:weight:-rw-r--r--"
	if strings.Join(got, " ") != want {
		t.Errorf("Collect:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	// Two inputs mapping to one path, a dangling link and a directory link are refused.
	write("other/w.safetensors", 0o644)
	if _, err := Collect([]string{filepath.Join(dir, "m"), filepath.Join(dir, "other")}, nil); err == nil || !strings.Contains(err.Error(), "both be stored as") {
		t.Errorf("duplicate path: %v", err)
	}
	os.Symlink("nowhere", filepath.Join(dir, "other", "dangling"))
	if _, err := Collect([]string{filepath.Join(dir, "other")}, nil); err == nil || !strings.Contains(err.Error(), "missing file") {
		t.Errorf("dangling link: %v", err)
	}
	os.Remove(filepath.Join(dir, "other", "dangling"))
	os.Symlink("../m", filepath.Join(dir, "other", "dirlink"))
	if _, err := Collect([]string{filepath.Join(dir, "other")}, nil); err == nil || !strings.Contains(err.Error(), "symbolic link to a directory") {
		t.Errorf("directory link: %v", err)
	}
	if _, err := ParseRules([]string{"*.bin=blob"}); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestCheckPath(t *testing.T) {
	for _, ok := range []string{"a", "a/b.bin", "weights/model-0.safetensors", ".hidden"} {
		if err := CheckPath(ok); err != nil {
			t.Errorf("CheckPath(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/./b", `a\b`, "..", "a/.."} {
		if err := CheckPath(bad); err == nil {
			t.Errorf("CheckPath(%q) accepted", bad)
		}
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	m := Metadata{
		Created: time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC), Description: "d", Framework: "pytorch",
		Metrics: map[string]float64{"accuracy": 0.93, "loss": 1e-5}, Params: map[string]string{"lr": "3e-4"},
		Labels: map[string]string{"team": "fraud"}, Datasets: []string{"s3://a", "s3://b@sha256:" + strings.Repeat("0", 64)},
		Extra: map[string]string{"com.example.other": "x"},
	}
	got, err := ParseAnnotations(m.Annotations())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
	}
	if _, err := ParseAnnotations(map[string]string{mediatypes.AnnotationMetricPrefix + "acc": "high"}); err == nil {
		t.Error("a non-numeric metric was accepted")
	}
}

func TestPackIsReproducible(t *testing.T) {
	layers := []ocispec.Descriptor{LayerDescriptor(File{Path: "w.gguf", Mode: 0o644, Size: 3, Kind: KindWeight}, digest.FromString("abc"))}
	meta := Metadata{Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Metrics: map[string]float64{"a": 1, "b": 2, "c": 3}}
	c1, m1, err := Pack(meta, layers)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // map iteration order must not leak into the bytes
		c2, m2, _ := Pack(meta, layers)
		if string(c1) != string(c2) || string(m1) != string(m2) {
			t.Fatal("Pack is not deterministic")
		}
	}
	var cfg map[string]any
	json.Unmarshal(c1, &cfg)
	if cfg["config"].(map[string]any)["format"] != "gguf" {
		t.Errorf("config: %s", c1)
	}
	v, err := Parse(ocispec.Descriptor{Digest: digest.FromBytes(m1)}, m1)
	if err != nil {
		t.Fatal(err)
	}
	if v.Format != "modelpack" || len(v.Files) != 1 || v.Files[0].Path != "w.gguf" || v.Files[0].Kind != KindWeight || v.Metadata.Metrics["c"] != 3 {
		t.Errorf("Parse(Pack()): %+v", v)
	}
}

func TestParseRejects(t *testing.T) {
	manifest := func(artifactType string, layers ...ocispec.Descriptor) []byte {
		b, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
			Config: ocispec.DescriptorEmptyJSON, Layers: layers})
		return b
	}
	ok := ocispec.Descriptor{MediaType: "application/vnd.cncf.model.weight.v1.raw", Digest: digest.FromString("x"), Size: 1,
		Annotations: map[string]string{mediatypes.AnnotationTitle: "w.bin"}}
	if _, err := Parse(ocispec.Descriptor{}, manifest("application/vnd.oci.image.config.v1+json", ok)); err == nil || !strings.Contains(err.Error(), "not a model") {
		t.Errorf("container image accepted as a model: %v", err)
	}
	evil := ok
	evil.Annotations = map[string]string{mediatypes.AnnotationFilepath: "../../etc/cron.d/x"}
	if _, err := Parse(ocispec.Descriptor{}, manifest(mediatypes.ArtifactTypeModel, evil)); err == nil || !strings.Contains(err.Error(), "leaves the model directory") {
		t.Errorf("traversal accepted: %v", err)
	}
	// A raw layer nobody named gets a name from its digest (docs/format.md);
	// two such layers of the same name are told apart by digest.
	nameless := ok
	nameless.Annotations = nil
	other := nameless
	other.Digest = digest.FromString("y")
	v, err := Parse(ocispec.Descriptor{}, manifest(mediatypes.ArtifactTypeModel, nameless, other))
	if err != nil || v.Files[0].Path != "untitled-"+nameless.Digest.Encoded()[:12] || v.Files[1].Path != "untitled-"+other.Digest.Encoded()[:12] {
		t.Errorf("nameless layers: %v %+v", err, v)
	}
	if v, err := Parse(ocispec.Descriptor{}, manifest(mediatypes.DockerModelConfigV02, withType(nameless, "application/vnd.docker.ai.gguf.v3"), withType(other, "application/vnd.docker.ai.gguf.v3"))); err != nil ||
		v.Files[0].Path != "model.gguf" || v.Files[1].Path != "model-"+other.Digest.Encoded()[:12]+".gguf" {
		t.Errorf("Docker model shards: %v %+v", err, v)
	}
	nameless.Digest = "sha256:short"
	if _, err := Parse(ocispec.Descriptor{}, manifest(mediatypes.ArtifactTypeModel, nameless)); err == nil || !strings.Contains(err.Error(), "no file path") {
		t.Errorf("a nameless layer with a bad digest was accepted: %v", err)
	}
	legacy := ok
	legacy.MediaType = "application/vnd.cnai.model.weight.v1.tar"
	legacy.Annotations = map[string]string{mediatypes.LegacyAnnotationFilepath: "w.bin"}
	v, err = Parse(ocispec.Descriptor{}, manifest(mediatypes.LegacyArtifactTypeModel, legacy))
	if err != nil || v.Format != "modelpack-legacy" || v.Files[0].Encoding != "tar" || v.Files[0].Kind != "weight" {
		t.Errorf("legacy ModelPack: %+v %v", v, err)
	}
}

// Two raw layers cannot hold one path, nor a file and the directory of
// another; a mode annotation with a setuid, setgid or sticky bit is refused.
// Each refusal names the path and both layers.
func TestParseRefusesPathConflictsAndSpecialModes(t *testing.T) {
	layer := func(p, mode, content string) ocispec.Descriptor {
		l := ocispec.Descriptor{MediaType: "application/vnd.cncf.model.weight.v1.raw", Digest: digest.FromString(content), Size: int64(len(content)),
			Annotations: map[string]string{mediatypes.AnnotationFilepath: p}}
		if mode != "" {
			l.Annotations[mediatypes.AnnotationFileMode] = mode
		}
		return l
	}
	manifest := func(layers ...ocispec.Descriptor) []byte {
		b, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: mediatypes.ArtifactTypeModel,
			Config: ocispec.DescriptorEmptyJSON, Layers: layers})
		return b
	}
	a, b := layer("w/a.bin", "", "a"), layer("w/a.bin", "", "b")
	for _, c := range []struct {
		name   string
		layers []ocispec.Descriptor
		want   []string
	}{
		{"same path", []ocispec.Descriptor{a, layer("README.md", "", "r"), b},
			[]string{`"w/a.bin"`, "layer 0 (" + a.Digest.String(), "layer 2 (" + b.Digest.String()}},
		{"file and directory", []ocispec.Descriptor{layer("w/a.bin/x", "", "x"), a},
			[]string{`"w/a.bin"`, "layer 1 (" + a.Digest.String(), "layer 0 (" + digest.FromString("x").String()}},
		{"setuid", []ocispec.Descriptor{layer("run.sh", "4755", "s")}, []string{`"4755"`, "not an octal permission"}},
		{"setgid", []ocispec.Descriptor{layer("run.sh", "2755", "s")}, []string{`"2755"`}},
		{"sticky", []ocispec.Descriptor{layer("run.sh", "1777", "s")}, []string{`"1777"`}},
	} {
		_, err := Parse(ocispec.Descriptor{}, manifest(c.layers...))
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not mention %q: %v", c.name, w, err)
			}
		}
	}
	v, err := Parse(ocispec.Descriptor{}, manifest(layer("run.sh", "0755", "s"), layer("w/a.bin", "", "a"), layer("w/b.bin", "", "b")))
	if err != nil || v.Files[0].Mode != 0o755 || v.Files[1].Mode != 0o644 {
		t.Errorf("distinct paths and a plain mode: %+v %v", v, err)
	}
}

func withType(d ocispec.Descriptor, mediaType string) ocispec.Descriptor {
	d.MediaType = mediaType
	return d
}
