package imageview

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
)

// layer is a whole tar layer of content at p.
func layer(t *testing.T, p string, mode int64, content []byte) []byte {
	t.Helper()
	h, err := Header(p, fsMode(mode), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	return append(append(h, content...), Trailer(int64(len(content)))...)
}

// Go's archive/tar (the reader containerd, umoci and crane use) reads a
// layer back as the directories, then the file with its name, mode, size,
// owner and time, then the end.
func TestLayerReadsAsTar(t *testing.T) {
	long := strings.Repeat("d", 80) + "/" + strings.Repeat("f", 60) + ".safetensors"
	for _, tc := range []struct {
		path    string
		mode    int64
		content []byte
		dirs    []string
	}{
		{"model.safetensors", 0o644, []byte("weights"), []string{"models/"}},
		{"a/b/run.sh", 0o755, []byte("#!/bin/sh\n"), []string{"models/", "models/a/", "models/a/b/"}},
		{"empty.txt", 0o600, nil, []string{"models/"}},
		{"block.bin", 0o644, bytes.Repeat([]byte{7}, 1024), []string{"models/"}},
		{long, 0o644, []byte("x"), []string{"models/", "models/" + strings.Repeat("d", 80) + "/"}},
	} {
		l := layer(t, tc.path, tc.mode, tc.content)
		if size, _ := LayerSize(tc.path, fsMode(tc.mode), int64(len(tc.content))); size != int64(len(l)) {
			t.Errorf("%s: LayerSize %d, layer is %d bytes", tc.path, size, len(l))
		}
		if len(l)%512 != 0 {
			t.Errorf("%s: %d bytes, not whole blocks", tc.path, len(l))
		}
		r := tar.NewReader(bytes.NewReader(l))
		var got []string
		for {
			h, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.path, err)
			}
			if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.ModTime.Unix() != 0 {
				t.Errorf("%s: %s has owner %d:%d %q:%q, mtime %v", tc.path, h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
			}
			switch h.Typeflag {
			case tar.TypeDir:
				if h.Mode != 0o755 {
					t.Errorf("%s: directory %s mode %o", tc.path, h.Name, h.Mode)
				}
				got = append(got, h.Name)
			case tar.TypeReg:
				b, _ := io.ReadAll(r)
				if h.Name != "models/"+tc.path || h.Mode != tc.mode || !bytes.Equal(b, tc.content) {
					t.Errorf("%s: file %s mode %o, %d bytes", tc.path, h.Name, h.Mode, len(b))
				}
				got = append(got, "file")
			default:
				t.Errorf("%s: entry %s of type %c", tc.path, h.Name, h.Typeflag)
			}
		}
		if want := append(tc.dirs, "file"); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: entries %q, want %q", tc.path, got, want)
		}
	}
}

// A file of 8 GiB or more carries its size in a PAX record; the header
// alone is read, the content is not needed to check it.
func TestLargeFileHeader(t *testing.T) {
	const size = 9 << 30
	h, err := Header("big.gguf", 0o644, size)
	if err != nil {
		t.Fatal(err)
	}
	r := tar.NewReader(bytes.NewReader(h))
	r.Next() // models/
	f, err := r.Next()
	if err != nil || f.Size != size || f.Name != "models/big.gguf" {
		t.Fatalf("%+v %v", f, err)
	}
}

// The encoding is frozen: these bytes are what Encoding "1" is. A change
// here re-digests every image view, which breaks every signature and every
// digest-pinned Pod: make a new Encoding instead.
func TestEncodingFrozen(t *testing.T) {
	for _, tc := range []struct {
		path    string
		mode    int64
		content string
		want    string
	}{
		{"config.json", 0o644, `{"a":1}`, "babe8b10c50b2519593055e8942e95ad53a0a613af07059bd9058f10a4863b75"},
		{"sub/dir/tok.model", 0o755, "", "25a96a3f4580f91aa728b88a6bf59cde6b3618a53480b178847a5c9e3676c71c"},
		{strings.Repeat("p", 101), 0o644, "z", "c7dff901ade27cc441fda6160c4668ab875c3f3bb4069a03fedc4c0d94010b84"},
	} {
		got := fmt.Sprintf("%x", sha256.Sum256(layer(t, tc.path, tc.mode, []byte(tc.content))))
		if got != tc.want {
			t.Errorf("%s: tar layer sha256 %s, frozen as %s", tc.path, got, tc.want)
		}
	}
}

// What must not reach a container runtime is refused.
func TestHeaderRefuses(t *testing.T) {
	for _, p := range []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", ".wh.model", "a/.wh..wh..opq", "./a"} {
		if _, err := Header(p, 0o644, 1); err == nil {
			t.Errorf("%q was accepted", p)
		}
	}
}

func TestTarDigestChecksLength(t *testing.T) {
	if _, err := TarDigest("a.bin", 0o644, 10, strings.NewReader("short")); err == nil {
		t.Error("a short file gave a digest")
	}
	d, err := TarDigest("a.bin", 0o644, 5, strings.NewReader("exact"))
	if err != nil || d.String() != fmt.Sprintf("sha256:%x", sha256.Sum256(layer(t, "a.bin", 0o644, []byte("exact")))) {
		t.Errorf("%s %v", d, err)
	}
}

func fsMode(m int64) fs.FileMode { return fs.FileMode(m) }
