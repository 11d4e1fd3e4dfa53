package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// A version whose tar+gzip layer is a decompression bomb (10 MiB that
// unpacks to 10 GiB of zeros) is refused by `modelreg pull` with the layer,
// the bound and the flag that raises it; nothing is left at the destination.
// A genuine but very compressible layer goes through the default bounds.
func TestPullRefusesDecompressionBomb(t *testing.T) {
	reg := startServer(t)
	e := newEnv(t)

	bomb := gzipZerosTar(t, "data/zeros.bin", 161)
	ref, layer := pushTarGzipModel(t, reg.Addr, "team/bomb", "1.0.0", bomb)
	out := filepath.Join(e.dir, "out")
	r := e.fails([]string{"data/zeros.bin", layer.String(), "decompression bomb", "1000 times its size", "--max-expand-ratio"}, "pull", ref, "-o", out)
	if r.Code != 1 {
		t.Errorf("exit code %d, want 1", r.Code)
	}
	noLeftovers(t, out)

	// A sparse one-hot CSV compresses about 500 times: through under the
	// default bounds, refused when a flag lowers one.
	csv := gzipTar(t, "data/onehot.csv", oneHotCSV(4<<20))
	ref, layer = pushTarGzipModel(t, reg.Addr, "team/onehot", "1.0.0", csv)
	e.fails([]string{layer.String(), "its size plus 1.0 MiB", "--max-expand-bytes"}, "pull", ref, "-o", out, "--max-expand-bytes", "1MiB")
	noLeftovers(t, out)
	e.fails([]string{layer.String(), "100 times its size", "--max-expand-ratio"}, "pull", ref, "-o", out, "--max-expand-ratio", "100")
	noLeftovers(t, out)
	r = e.fails([]string{"--max-expand-bytes", "not a size"}, "pull", ref, "-o", out, "--max-expand-bytes", "4 gigs")
	if r.Code != 2 {
		t.Errorf("bad --max-expand-bytes: exit code %d, want 2", r.Code)
	}
	e.ok("pull", ref, "-o", out)
	if b, err := os.ReadFile(filepath.Join(out, "data", "onehot.csv")); err != nil || !bytes.Equal(b, oneHotCSV(4<<20)) {
		t.Errorf("data/onehot.csv after pull: %d bytes, %v", len(b), err)
	}
}

// oneHotCSV is about size bytes of a one-hot encoded feature matrix: rows
// of 2000 columns, all 0 but one.
func oneHotCSV(size int) []byte {
	var b bytes.Buffer
	row := make([]string, 2000)
	for i := 0; b.Len() < size; i++ {
		for j := range row {
			row[j] = "0"
		}
		row[(i*7919)%len(row)] = "1"
		b.WriteString(strings.Join(row, ",") + "\n")
	}
	return b.Bytes()
}

// gzipTar is a tar+gzip layer holding one file.
func gzipTar(t *testing.T, name string, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	zw.Close()
	return b.Bytes()
}

// gzipZerosTar is a tar+gzip layer holding one file of zeros: a gzip member
// with the tar header, then chunks members of 64 MiB of zeros each (a gzip
// stream may hold several members), so a 10 GiB bomb costs one 64 MiB
// compression. The zeros end with the tar's end-of-archive blocks.
func gzipZerosTar(t *testing.T, name string, chunks int) []byte {
	t.Helper()
	gz := func(b []byte) []byte {
		var out bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
	const chunk = 64 << 20
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(chunks)*chunk - 1024, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	out := gz(hdr.Bytes())
	zeros := gz(make([]byte, chunk))
	for range chunks {
		out = append(out, zeros...)
	}
	return out
}

// pushTarGzipModel writes, with oras-go, a model version of a config.json
// and one tar+gzip dataset layer, the way a hostile producer could.
func pushTarGzipModel(t *testing.T, addr, repoName, tag string, layerBytes []byte) (string, digest.Digest) {
	t.Helper()
	ctx := context.Background()
	repo, err := remote.NewRepository(addr + "/" + repoName)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	cfgFile := []byte(`{"hidden_size": 64}`)
	layers := []ocispec.Descriptor{
		{MediaType: mediatypes.Layer(mediatypes.LayerWeightConfig, mediatypes.EncodingRaw), Digest: digest.FromBytes(cfgFile), Size: int64(len(cfgFile)),
			Annotations: map[string]string{mediatypes.AnnotationFilepath: "config.json", mediatypes.AnnotationTitle: "config.json"}},
		{MediaType: mediatypes.Layer(mediatypes.LayerDataset, mediatypes.EncodingTarGzip), Digest: digest.FromBytes(layerBytes), Size: int64(len(layerBytes)),
			Annotations: map[string]string{mediatypes.AnnotationFilepath: "data", mediatypes.AnnotationTitle: "data"}},
	}
	cfg := []byte("{}")
	cdesc := ocispec.Descriptor{MediaType: mediatypes.ModelConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	for _, blob := range []struct {
		d ocispec.Descriptor
		b []byte
	}{{layers[0], cfgFile}, {layers[1], layerBytes}, {cdesc, cfg}} {
		if err := repo.Push(ctx, blob.d, bytes.NewReader(blob.b)); err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: mediatypes.ArtifactTypeModel, Config: cdesc, Layers: layers})
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	if err := repo.PushReference(ctx, mdesc, bytes.NewReader(m), tag); err != nil {
		t.Fatal(err)
	}
	return addr + "/" + repoName + ":" + tag, layers[1].Digest
}
