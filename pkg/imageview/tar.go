// Package imageview derives the image view of a model version: an OCI
// image whose layers are tars holding the version's files under /models,
// so container runtimes (containerd, CRI-O, Kubernetes image volumes,
// KServe) can pull and mount a model like any image. The view is a pure
// function of the version: the same version gives the same view digest on
// every registry and machine, which is what lets a Pod pin it by digest
// and a signature on it mean something.
package imageview

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Encoding names the tar encoding below. It is part of every view's
// identity (docs/format.md, "Image view"): changing a single byte of it
// changes every view's digest, breaking signatures and digest-pinned Pods,
// so a change is a new Encoding, never an edit.
const Encoding = "1"

// Root is the directory the files are under in the image.
const Root = "models"

const (
	block = 512
	// maxOctalSize is the largest size the ustar size field holds
	// (11 octal digits); larger files carry a PAX size record.
	maxOctalSize = 1<<33 - 1
	// maxName is the longest name the ustar name field holds; longer
	// names carry a PAX path record (the ustar prefix field is not used).
	maxName = 100
	dirMode = 0o755
)

// Header returns the bytes of a file's tar layer that come before its
// content: an entry for each directory from models/ down to the file's
// parent, then the file's own header (with a PAX header first when its
// path or size does not fit ustar). A tar layer is Header + the file's
// bytes + Trailer.
//
// The encoding (Encoding "1"), frozen: ustar headers; uid and gid 0, no
// user or group names, mtime 0; directories mode 0755, files their mode's
// permission bits; names relative ("models/a/b.bin", directories with a
// trailing slash); a name over 100 bytes or a size of 8 GiB or more is
// carried by a PAX extended header (type 'x', name "PaxHeaders/0", records
// "path" then "size", in that order) before the entry, whose own name field
// then holds the name's first 100 bytes and size field 0 for a large file.
func Header(p string, mode fs.FileMode, size int64) ([]byte, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("%s: negative size %d", p, size)
	}
	var out []byte
	dirs := strings.Split(p, "/")
	dir := Root + "/"
	out = appendEntry(out, dir, '5', dirMode, 0)
	for _, d := range dirs[:len(dirs)-1] {
		dir += d + "/"
		out = appendEntry(out, dir, '5', dirMode, 0)
	}
	return appendEntry(out, Root+"/"+p, '0', int64(mode.Perm()), size), nil
}

// Trailer returns the bytes of a tar layer after a file of size bytes:
// zeros to the end of the file's last block, then the two zero blocks
// that end an archive.
func Trailer(size int64) []byte {
	return make([]byte, padding(size)+2*block)
}

// LayerSize is the size of a file's tar layer.
func LayerSize(p string, mode fs.FileMode, size int64) (int64, error) {
	h, err := Header(p, mode, size)
	if err != nil {
		return 0, err
	}
	return int64(len(h)) + size + padding(size) + 2*block, nil
}

// Layer is a file's tar layer as a stream: Header, the content read from
// r (exactly size bytes), Trailer.
func Layer(p string, mode fs.FileMode, size int64, r io.Reader) (io.Reader, error) {
	h, err := Header(p, mode, size)
	if err != nil {
		return nil, err
	}
	return io.MultiReader(strings.NewReader(string(h)), io.LimitReader(r, size), strings.NewReader(string(Trailer(size)))), nil
}

func padding(size int64) int64 { return (block - size%block) % block }

// checkPath refuses what must not reach an image: paths that are not
// relative and clean, and whiteout names (.wh.), which a container
// runtime would read as deletions.
func checkPath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." || strings.Contains(p, "\\") {
		return fmt.Errorf("%q: an image view path must be relative and clean", p)
	}
	for _, c := range strings.Split(p, "/") {
		if strings.HasPrefix(c, ".wh.") {
			return fmt.Errorf("%q: a path component starting with .wh. is a whiteout to container runtimes; rename the file", p)
		}
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("%q: a path must not contain NUL", p)
	}
	return nil
}

// appendEntry appends one entry's header block(s): a PAX extended header
// when the name or size does not fit, then the ustar header.
func appendEntry(out []byte, name string, typ byte, mode, size int64) []byte {
	var pax []byte
	if len(name) > maxName {
		pax = appendRecord(pax, "path", name)
	}
	if size > maxOctalSize {
		pax = appendRecord(pax, "size", strconv.FormatInt(size, 10))
	}
	if pax != nil {
		out = append(out, ustar("PaxHeaders/0", 'x', 0o644, int64(len(pax)))...)
		out = append(out, pax...)
		out = append(out, make([]byte, padding(int64(len(pax))))...)
	}
	if len(name) > maxName {
		name = name[:maxName]
	}
	if size > maxOctalSize {
		size = 0
	}
	return append(out, ustar(name, typ, mode, size)...)
}

// appendRecord appends a PAX record "LEN key=value\n", LEN counting the
// whole record including its own digits.
func appendRecord(b []byte, key, value string) []byte {
	rest := len(key) + len(value) + 3 // space, '=', newline
	n := rest + len(strconv.Itoa(rest))
	if len(strconv.Itoa(n)) != len(strconv.Itoa(rest)) {
		n++
	}
	return append(b, fmt.Sprintf("%d %s=%s\n", n, key, value)...)
}

// ustar is one 512-byte ustar header.
func ustar(name string, typ byte, mode, size int64) []byte {
	h := make([]byte, block)
	copy(h[0:100], name)
	copy(h[100:108], fmt.Sprintf("%07o\x00", mode))
	copy(h[108:116], "0000000\x00") // uid
	copy(h[116:124], "0000000\x00") // gid
	copy(h[124:136], fmt.Sprintf("%011o\x00", size))
	copy(h[136:148], "00000000000\x00") // mtime
	h[156] = typ
	copy(h[257:263], "ustar\x00")
	copy(h[263:265], "00")
	copy(h[329:337], "0000000\x00") // devmajor
	copy(h[337:345], "0000000\x00") // devminor
	// The checksum is computed with its own field as eight spaces.
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// TarDigest reads a file's bytes (exactly size, from r) and returns the
// digest of its tar layer: what a view's diff_ids and layer digests are.
func TarDigest(p string, mode fs.FileMode, size int64, r io.Reader) (digest.Digest, error) {
	l, err := Layer(p, mode, size, r)
	if err != nil {
		return "", err
	}
	d := digest.Canonical.Digester()
	n, err := io.CopyBuffer(d.Hash(), l, make([]byte, 1<<20))
	if err != nil {
		return "", err
	}
	if want, _ := LayerSize(p, mode, size); n != want {
		return "", fmt.Errorf("%s: %d bytes read, %d expected: the file is shorter than its layer says", p, n-(want-size), size)
	}
	return d.Digest(), nil
}
