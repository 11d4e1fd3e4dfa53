package imageview

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func testFiles(t *testing.T) (ocispec.Descriptor, []File) {
	version := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("version"), Size: 900}
	var files []File
	for _, f := range []struct{ path, content string }{{"config.json", `{"a":1}`}, {"model.safetensors", "weights"}} {
		d, err := TarDigest(f.path, 0o644, int64(len(f.content)), strings.NewReader(f.content))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Path: f.path, Mode: 0o644, Size: int64(len(f.content)), Raw: digest.FromString(f.content), Tar: d})
	}
	return version, files
}

// The view is an image a runtime can unpack: an image config with
// diff_ids equal to the tar layers, linux, layers of the tar media type
// in the version's order, each naming the raw layer it wraps, and the
// version as its subject. Built twice, it is the same bytes.
func TestBuild(t *testing.T) {
	version, files := testFiles(t)
	v, err := Build(version, files)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	var cfg ocispec.Image
	if json.Unmarshal(v.Manifest, &m) != nil || json.Unmarshal(v.Config, &cfg) != nil {
		t.Fatal("not JSON")
	}
	if cfg.OS != "linux" || cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 2 {
		t.Errorf("config %s", v.Config)
	}
	if m.Config.MediaType != ocispec.MediaTypeImageConfig || m.Config.Digest != digest.FromBytes(v.Config) {
		t.Errorf("config descriptor %+v", m.Config)
	}
	for i, l := range m.Layers {
		size, _ := LayerSize(files[i].Path, files[i].Mode, files[i].Size)
		if l.MediaType != ocispec.MediaTypeImageLayer || l.Digest != cfg.RootFS.DiffIDs[i] || l.Digest != files[i].Tar || l.Size != size || l.Annotations[AnnotationRaw] != files[i].Raw.String() {
			t.Errorf("layer %d: %+v", i, l)
		}
	}
	if m.Subject == nil || m.Subject.Digest != version.Digest || m.Annotations[AnnotationVersion] != version.Digest.String() || m.Annotations[AnnotationEncoding] != Encoding {
		t.Errorf("manifest does not name its version: %s", v.Manifest)
	}
	if v.Descriptor.Digest != digest.FromBytes(v.Manifest) {
		t.Error("descriptor digest is not the manifest's")
	}
	again, _ := Build(version, files)
	if again.Descriptor.Digest != v.Descriptor.Digest {
		t.Error("two builds of one version differ")
	}
	if _, err := Build(version, nil); err == nil {
		t.Error("a version without files has a view")
	}
}
