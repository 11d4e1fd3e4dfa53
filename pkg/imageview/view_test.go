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

// The view is an index over one image per platform that a runtime can
// unpack: each config linux with its platform's architecture and diff_ids
// equal to the tar layers, layers of the tar media type in the version's
// order naming the raw layer each wraps; the index names the version as
// its subject. Built twice, it is the same bytes.
func TestBuild(t *testing.T) {
	version, files := testFiles(t)
	v, err := Build(version, files)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if json.Unmarshal(v.Index, &idx) != nil || v.Descriptor.Digest != digest.FromBytes(v.Index) || v.Descriptor.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatal("the index is not JSON or its descriptor is wrong")
	}
	if idx.ArtifactType != ArtifactType || idx.Subject == nil || idx.Subject.Digest != version.Digest ||
		idx.Annotations[AnnotationVersion] != version.Digest.String() || idx.Annotations[AnnotationEncoding] != Encoding {
		t.Errorf("the index does not name its version: %s", v.Index)
	}
	if len(idx.Manifests) != len(Platforms) {
		t.Fatalf("%d manifests for %d platforms", len(idx.Manifests), len(Platforms))
	}
	for i, md := range idx.Manifests {
		var m ocispec.Manifest
		var cfg ocispec.Image
		mb, ok := v.Find(md.Digest)
		if !ok || json.Unmarshal(mb.Bytes, &m) != nil || md.Platform == nil || md.Platform.OS != Platforms[i].OS || md.Platform.Architecture != Platforms[i].Architecture {
			t.Fatalf("manifest %d: %+v", i, md)
		}
		cb, ok := v.Find(m.Config.Digest)
		if !ok || json.Unmarshal(cb.Bytes, &cfg) != nil || m.Config.MediaType != ocispec.MediaTypeImageConfig {
			t.Fatalf("config of manifest %d", i)
		}
		if cfg.OS != "linux" || cfg.Architecture != Platforms[i].Architecture || cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(files) {
			t.Errorf("config %d: %s", i, cb.Bytes)
		}
		for j, l := range m.Layers {
			size, _ := LayerSize(files[j].Path, files[j].Mode, files[j].Size)
			if l.MediaType != ocispec.MediaTypeImageLayer || l.Digest != cfg.RootFS.DiffIDs[j] || l.Digest != files[j].Tar || l.Size != size || l.Annotations[AnnotationRaw] != files[j].Raw.String() {
				t.Errorf("manifest %d layer %d: %+v", i, j, l)
			}
		}
	}
	again, _ := Build(version, files)
	if again.Descriptor.Digest != v.Descriptor.Digest {
		t.Error("two builds of one version differ")
	}
	if _, err := Build(version, nil); err == nil {
		t.Error("a version without files has a view")
	}
}
