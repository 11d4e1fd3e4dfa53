package transfer

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// PullOptions tunes Pull. The zero value is usable: a zero field takes its
// value from DefaultPullOptions.
type PullOptions struct {
	// Concurrency is how many files are downloaded at once.
	Concurrency int
	// Retry is how the manifest and each blob are retried: a blob is
	// streamed into its file, which the transport cannot replay, so each
	// attempt fetches it again, and one blob's retries never restart the
	// others.
	Retry remote.RetryPolicy
	// Progress reports each file.
	Progress progress.Reporter

	// MaxExpandRatio bounds what a tar layer may unpack to, in multiples
	// of its size in the registry: a few MiB of compressed zeros (a
	// decompression bomb) would otherwise write until the disk is full.
	// Every layer may unpack to at least 1 MiB, since small tars are mostly
	// padding. 0 means DefaultMaxExpandRatio; a negative value removes
	// the bound.
	MaxExpandRatio int64
	// MaxExpandBytes bounds how many bytes a tar layer may unpack to beyond
	// its own size, whatever its ratio: the ratio alone lets a large
	// compressed bomb write ratio times its size, while a genuine layer of
	// incompressible weights unpacks to about its own size and is never
	// stopped by this bound. 0 means DefaultMaxExpandBytes; a negative
	// value removes the bound.
	MaxExpandBytes int64
	// MaxEntries bounds the entries (files and directories) of one tar
	// layer: a layer of millions of empty files compresses to little and
	// would exhaust the destination's inodes. 0 means DefaultMaxEntries; a
	// negative value removes the bound.
	MaxEntries int64

	// RangeConnections is how many HTTP Range requests, each over its own
	// connection, fetch one raw layer of at least RangeThreshold bytes
	// from a registry (docs/transfer.md, "Ranged pull"). 0 means
	// DefaultRangeConnections, except from a registry on loopback, read
	// in one stream unless RangeConnections is set; 1 fetches every blob
	// in one stream.
	RangeConnections int
	// RangeThreshold is the size from which a raw layer is fetched in
	// ranges. 0 means DefaultRangeThreshold.
	RangeThreshold int64

	// Include and Exclude select the files fetched: those matching an
	// Include pattern (every file when there is none) and no Exclude
	// pattern. A pattern without a slash matches base names at any depth,
	// one with a slash whole paths, ** spanning directories.
	Include, Exclude []string
}

// The default decompression bounds of a pull. docs/format.md ("Decompression
// bounds") holds the measurements they are chosen from.
const (
	// DefaultMaxExpandRatio is 1000 because ordinary data stays well below
	// it (text and CSV 2-15 times, tars of many small files up to 110
	// times, sparse one-hot CSVs up to 565 times) while zeros compress
	// 1030 times with gzip and 32000 times with zstd.
	DefaultMaxExpandRatio int64 = 1000
	// DefaultMaxExpandBytes (64 GiB) is what a bomb can at most add to the
	// disk beyond the bytes it was downloaded as; gzip cannot exceed about
	// 1032 times, so this is the bound that stops a large gzip bomb.
	DefaultMaxExpandBytes int64 = 64 << 30
	// DefaultMaxEntries (one million) is above the file count of any model
	// or dataset directory expected in one layer, and far below the inodes
	// of a filesystem that holds models.
	DefaultMaxEntries int64 = 1_000_000

	// expandFloor is what any tar layer may unpack to, whatever its ratio:
	// a tar of one small file is 10 KiB of mostly zeros and compresses 60 times.
	expandFloor = 1 << 20
	// maxZstdWindow is the largest zstd window (decoder memory) accepted,
	// the default limit of the zstd CLI; larger windows need --long when
	// compressing and are refused as a memory bomb.
	maxZstdWindow = 128 << 20
)

// DefaultPullOptions fill the zero fields of the PullOptions given to
// Pull: one file at once per CPU (at least 4), remote.DefaultRetryPolicy,
// no progress reports, the default decompression bounds, and large raw
// layers fetched as DefaultRangeConnections ranges.
var DefaultPullOptions = PullOptions{
	Concurrency:    max(4, runtime.NumCPU()),
	Retry:          remote.DefaultRetryPolicy,
	Progress:       progress.Discard(),
	MaxExpandRatio: DefaultMaxExpandRatio,
	MaxExpandBytes: DefaultMaxExpandBytes,
	MaxEntries:     DefaultMaxEntries,

	RangeConnections: DefaultRangeConnections,
	RangeThreshold:   DefaultRangeThreshold,
}

// withDefaults returns o with its zero fields taken from DefaultPullOptions.
func (o PullOptions) withDefaults() PullOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultPullOptions.Concurrency
	}
	if o.Retry == (remote.RetryPolicy{}) {
		o.Retry = DefaultPullOptions.Retry
	}
	if o.Progress == nil {
		o.Progress = DefaultPullOptions.Progress
	}
	if o.MaxExpandRatio == 0 {
		o.MaxExpandRatio = DefaultPullOptions.MaxExpandRatio
	}
	if o.MaxExpandBytes == 0 {
		o.MaxExpandBytes = DefaultPullOptions.MaxExpandBytes
	}
	if o.MaxEntries == 0 {
		o.MaxEntries = DefaultPullOptions.MaxEntries
	}
	if o.RangeConnections <= 0 {
		o.RangeConnections = DefaultPullOptions.RangeConnections
	}
	if o.RangeThreshold <= 0 {
		o.RangeThreshold = DefaultPullOptions.RangeThreshold
	}
	return o
}

// PullResult is what a pull did.
type PullResult struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	Dir       string `json:"dir"`
	Files     int    `json:"files"`
	Size      int64  `json:"size"`
	// Skipped are the paths --include/--exclude left out.
	Skipped []string `json:"skipped,omitempty"`
}

// Fetch resolves ref and reads its manifest as a model version, verifying
// the manifest's digest and size. A transient failure, a body cut short
// included, is retried under remote.DefaultRetryPolicy.
func Fetch(ctx context.Context, repo oras.ReadOnlyTarget, ref registry.Reference) (*model.Version, error) {
	return fetch(ctx, repo, ref, remote.DefaultRetryPolicy)
}

// fetch is Fetch under the retry policy retry.
func fetch(ctx context.Context, repo oras.ReadOnlyTarget, ref registry.Reference, retry remote.RetryPolicy) (*model.Version, error) {
	var (
		desc ocispec.Descriptor
		raw  []byte
	)
	err := retry.Do(ctx, func(ctx context.Context) error {
		d, rc, err := fetchReference(ctx, repo, ref.Reference)
		if err != nil {
			return err
		}
		defer rc.Close()
		desc = d
		raw, err = content.ReadAll(rc, d)
		return err
	})
	if err != nil {
		if errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
			return nil, fmt.Errorf("%s: manifest failed digest verification: %w", ref, err)
		}
		return nil, remote.Explain(err, ref.String())
	}
	v, err := model.Parse(desc, raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return v, nil
}

// fetchReference resolves and opens ref in one request where the target
// can (a registry), else in two (an OCI layout).
func fetchReference(ctx context.Context, target oras.ReadOnlyTarget, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	if rf, ok := target.(registry.ReferenceFetcher); ok {
		return rf.FetchReference(ctx, ref)
	}
	d, err := target.Resolve(ctx, ref)
	if err != nil {
		return d, nil, err
	}
	rc, err := target.Fetch(ctx, d)
	return d, rc, err
}

// Pull downloads the version ref into dir. Every blob is verified against
// its digest while it is written. Files go into a temporary directory beside
// dir that is renamed into place only when everything is verified, so a
// failed or interrupted pull leaves nothing at dir. dir must not exist or be
// an empty directory.
//
// Tar layers are unpacked under the bounds of opts (decompressed bytes,
// entries), and no path may be written by two layers, or twice by one tar:
// such a version is refused, whatever order its layers arrive in.
func Pull(ctx context.Context, repo oras.ReadOnlyTarget, ref registry.Reference, dir string, opts PullOptions) (*PullResult, error) {
	rangesAsked := opts.RangeConnections > 0
	opts = opts.withDefaults()
	sel, err := newSelection(opts.Include, opts.Exclude)
	if err != nil {
		return nil, err
	}
	if err := checkDest(dir); err != nil {
		return nil, err
	}
	v, err := fetch(ctx, repo, ref, opts.Retry)
	if err != nil {
		return nil, err
	}
	// The whole version is checked, whatever is selected: a version whose
	// layers clash is refused, also for a partial pull.
	if _, err := newTreeClaims(v.Files); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	files, skipped, err := sel.apply(v.Files)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	tree, err := newTreeClaims(files)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".partial-")
	if err != nil {
		return nil, fmt.Errorf("cannot create a directory beside %s: %w", dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	if err := opts.Retry.Do(ctx, func(ctx context.Context) error { return fetchVerified(ctx, repo, v.Config, io.Discard) }); err != nil {
		return nil, fmt.Errorf("%s: config blob: %w", ref, err)
	}
	p := &puller{repo: repo, root: root, opts: opts, tree: tree, blobs: newBlobSource(repo, rangesAsked)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	var size int64
	for i, f := range files {
		size += f.Descriptor.Size
		g.Go(func() error {
			t := opts.Progress.Track("pulled", f.Path, f.Descriptor.Size)
			err := p.pullLayer(gctx, i, f, t)
			if err != nil {
				name := f.Path
				if name == "" {
					name = "layer " + f.Descriptor.Digest.String()
				}
				err = fmt.Errorf("%s: %w", name, remote.Explain(err, ref.String()))
				t.Fail(err)
				return err
			}
			t.Done("pulled")
			return nil
		})
	}
	err = g.Wait()
	opts.Progress.Wait()
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(abs); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return nil, err
	}
	ok = true
	if skipped == nil {
		size = v.Size()
	}
	return &PullResult{Reference: ref.String(), Digest: v.Descriptor.Digest.String(), Dir: dir, Files: len(files), Size: size, Skipped: skipped}, nil
}

// checkDest refuses a destination that holds anything, so a pull never
// mixes two versions' files.
func checkDest(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		if info, serr := os.Stat(dir); serr == nil && !info.IsDir() {
			return fmt.Errorf("%s exists and is not a directory; choose another -o", dir)
		}
		return err
	case len(entries) > 0:
		return fmt.Errorf("%s exists and is not empty; pull into a new or empty directory", dir)
	}
	return nil
}

func fetchVerified(ctx context.Context, repo content.Fetcher, desc ocispec.Descriptor, w io.Writer) error {
	rc, err := repo.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, desc)
	if _, err := io.CopyBuffer(w, vr, make([]byte, 1<<20)); err != nil {
		return err
	}
	return verifyErr(vr.Verify(), desc)
}

func verifyErr(err error, desc ocispec.Descriptor) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
		return fmt.Errorf("blob %s failed digest verification: the registry returned corrupted content (%v); nothing was written", desc.Digest, err)
	}
	return err
}

// puller is one pull in progress: where files go, the bounds tar layers
// are unpacked under, and the paths already claimed by the pull's layers.
type puller struct {
	repo oras.ReadOnlyTarget
	root *os.Root
	opts PullOptions
	tree *treeClaims
	// blobs is set when the target is a registry: large raw layers are
	// then fetched in ranges.
	blobs *blobSource
}

// pullLayer writes layer i (f) into the tree: a large raw layer from a
// registry that serves ranges as ranges over separate connections, each
// retried alone; anything else in one stream, retried whole.
func (p *puller) pullLayer(ctx context.Context, i int, f model.FileEntry, t progress.Tracker) error {
	var first io.ReadCloser // a 200 answer to the first range request: the whole blob
	if p.rangeable(f) {
		body, err := p.pullRanged(ctx, f, t)
		switch {
		case err == nil && body == nil:
			return nil
		case errors.Is(err, errNoRanges):
		case err != nil:
			return err
		default:
			first = body
		}
	}
	return p.opts.Retry.Do(ctx, func(ctx context.Context) error {
		rc := first
		first = nil
		return p.pullFile(ctx, i, f, t, rc)
	})
}

// pullFile writes layer i (f) into the tree, read from rc when it is not
// nil, else fetched. It may run again after a transient failure: it then
// writes the same files over.
func (p *puller) pullFile(ctx context.Context, i int, f model.FileEntry, t progress.Tracker, rc io.ReadCloser) error {
	if rc == nil {
		var err error
		if rc, err = p.repo.Fetch(ctx, f.Descriptor); err != nil {
			return err
		}
	}
	defer rc.Close()
	vr := content.NewVerifyReader(progress.Reader(rc, t), f.Descriptor)
	switch f.Encoding {
	case mediatypes.EncodingRaw:
		// Raw paths were claimed from the manifest before any layer started.
		if err := writeFile(p.root, f.Path, f.Mode, vr); err != nil {
			return err
		}
	case mediatypes.EncodingTar:
		// Uncompressed, but a sparse entry still expands: same bounds.
		if err := p.extractTar(i, f, vr); err != nil {
			return err
		}
	case mediatypes.EncodingTarGzip:
		zr, err := gzip.NewReader(vr)
		if err != nil {
			return fmt.Errorf("layer %s is not gzip: %w", f.Descriptor.Digest, err)
		}
		if err := p.extractTar(i, f, zr); err != nil {
			return err
		}
	case mediatypes.EncodingTarZstd:
		zr, err := zstd.NewReader(vr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return fmt.Errorf("layer %s: zstd: %w", f.Descriptor.Digest, err)
		}
		err = p.extractTar(i, f, zr)
		zr.Close()
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("layer encoding %q is not supported yet (media type %s)", f.Encoding, f.Descriptor.MediaType)
	}
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return err
	}
	return verifyErr(vr.Verify(), f.Descriptor)
}

// writeFile writes r to p and gives it the permission bits of mode: only
// rwx for user, group and others. setuid, setgid and sticky bits are never
// restored, whatever a tar header or an annotation says, so a pulled model
// cannot plant a setuid executable.
func writeFile(root *os.Root, p string, mode fs.FileMode, r io.Reader) error {
	name := filepath.FromSlash(p)
	if d := filepath.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// A retry starts the file over.
	fh, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(fh, r, make([]byte, 1<<20)); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	return root.Chmod(name, mode&fs.ModePerm)
}

// tarPerm keeps only the permission bits (0777) of a tar header's mode;
// the setuid (04000), setgid (02000) and sticky (01000) bits are dropped.
func tarPerm(h *tar.Header) fs.FileMode {
	return fs.FileMode(h.Mode & 0o777)
}

// expandLimit is how many bytes layer f may unpack to under p's bounds, and
// the flag that raises the bound that decides it; limit < 0 means unbounded.
func (p *puller) expandLimit(f model.FileEntry) (limit int64, flag string) {
	limit = -1
	size := max(f.Descriptor.Size, 0)
	if r := p.opts.MaxExpandRatio; r > 0 {
		limit, flag = math.MaxInt64, "--max-expand-ratio"
		if size <= math.MaxInt64/r {
			limit = max(size*r, expandFloor)
		}
	}
	if c := p.opts.MaxExpandBytes; c > 0 {
		abs := int64(math.MaxInt64)
		if size <= math.MaxInt64-c {
			abs = size + c
		}
		if limit < 0 || abs < limit {
			limit, flag = abs, "--max-expand-bytes"
		}
	}
	return limit, flag
}

// boundError is a tar layer refused by a bound of PullOptions. It is its
// own type so that the tar reader's wrapping cannot hide it and retry never
// mistakes it for a transient failure.
type boundError struct{ msg string }

func (e *boundError) Error() string { return e.msg }

// errExpand reports a layer that unpacks beyond limit.
func (p *puller) errExpand(f model.FileEntry, limit int64, flag, what string) error {
	return &boundError{fmt.Sprintf(
		"layer %s (%s, %s) %s beyond %s (%d bytes), the most this layer may unpack to (%s); refused as a possible decompression bomb; if the layer is genuine, raise the bound with %s (0 removes it)",
		f.Descriptor.Digest, f.Encoding, progress.Size(f.Descriptor.Size), what, progress.Size(limit), limit, p.boundRule(), flag)}
}

// boundRule spells out the expansion bounds in force.
func (p *puller) boundRule() string {
	var parts []string
	if p.opts.MaxExpandRatio > 0 {
		parts = append(parts, fmt.Sprintf("%d times its size, at least %s", p.opts.MaxExpandRatio, progress.Size(expandFloor)))
	}
	if p.opts.MaxExpandBytes > 0 {
		parts = append(parts, fmt.Sprintf("its size plus %s", progress.Size(p.opts.MaxExpandBytes)))
	}
	return strings.Join(parts, ", and at most ")
}

// boundedReader fails once more than limit bytes have been read through it.
type boundedReader struct {
	r     io.Reader
	n     int64
	limit int64
	fail  func() error
}

func (b *boundedReader) Read(buf []byte) (int, error) {
	if b.limit >= 0 {
		if b.n > b.limit {
			return 0, b.fail()
		}
		if rest := b.limit - b.n; rest < int64(len(buf)) {
			buf = buf[:rest+1] // read at most one byte past the limit
		}
	}
	n, err := b.r.Read(buf)
	b.n += int64(n)
	if b.limit >= 0 && b.n > b.limit {
		return n, b.fail()
	}
	return n, err
}

// extractTar unpacks the regular files and directories of tar layer i (f)
// from r, the layer's decompressed stream; links and devices are refused,
// as are entries that would leave the tree. The decompressed stream and
// the sum of the files' sizes must both stay within the layer's expansion
// bound, and the entries within MaxEntries; every path is claimed in the
// pull's tree, so a path held by another layer, or twice by this one, is
// refused.
func (p *puller) extractTar(i int, f model.FileEntry, r io.Reader) error {
	limit, flag := p.expandLimit(f)
	br := &boundedReader{r: r, limit: limit, fail: func() error {
		return p.errExpand(f, limit, flag, "decompresses")
	}}
	tr := tar.NewReader(br)
	attempt := map[string]bool{} // the paths of this attempt, to find a tar's own duplicates
	var entries, files int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var be *boundError
			if errors.As(err, &be) {
				return be
			}
			return fmt.Errorf("reading tar layer %s: %w", f.Descriptor.Digest, err)
		}
		entries++
		if p.opts.MaxEntries > 0 && entries > p.opts.MaxEntries {
			return &boundError{fmt.Sprintf(
				"layer %s (%s, %s) holds more than %d tar entries, the most one layer may hold; refused as a possible inode bomb; if the layer is genuine, raise the bound with --max-entries (0 removes it)",
				f.Descriptor.Digest, f.Encoding, progress.Size(f.Descriptor.Size), p.opts.MaxEntries)}
		}
		name := path.Clean(h.Name)
		if err := model.CheckPath(name); err != nil {
			return fmt.Errorf("tar entry: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := p.tree.claim(name, i, true, attempt); err != nil {
				return err
			}
			if err := p.root.MkdirAll(filepath.FromSlash(name), 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			// The declared size is checked before writing: a bomb of one
			// huge file is refused without writing a byte of it.
			if limit >= 0 && (h.Size > limit || files > limit-h.Size) {
				return p.errExpand(f, limit, flag, fmt.Sprintf("holds %q of %s, which takes it", name, progress.Size(h.Size)))
			}
			files += h.Size
			if err := p.tree.claim(name, i, false, attempt); err != nil {
				return err
			}
			if err := writeFile(p.root, name, tarPerm(h), tr); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar entry %q is a link or special file; only files and directories are extracted", h.Name)
		}
	}
}

// treeClaims records which layer writes each path of a pull, shared by
// the layers that run concurrently. Raw layers' paths are known from the
// manifest and claimed before any layer starts; tar entries are claimed as
// they are read. A file path claimed by two layers (or twice by one tar),
// or claimed as a file by one layer and as a directory by another, is
// refused, so the outcome never depends on which layer is written first.
// Directories may appear in several layers.
type treeClaims struct {
	mu     sync.Mutex
	layers []model.FileEntry
	files  map[string]int // file path -> index of the layer that writes it
	dirs   map[string]int // directory path -> index of the first layer that needs it
}

func newTreeClaims(layers []model.FileEntry) (*treeClaims, error) {
	c := &treeClaims{layers: layers, files: map[string]int{}, dirs: map[string]int{}}
	for i, f := range layers {
		if f.Encoding != mediatypes.EncodingRaw {
			continue
		}
		if err := c.claim(f.Path, i, false, nil); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// layerName names layer i for an error message.
func (c *treeClaims) layerName(i int) string {
	f := c.layers[i]
	return fmt.Sprintf("layer %d (%s %s)", i, f.Encoding, f.Descriptor.Digest)
}

// conflict reports path p claimed by layers a and b, naming the layers in
// manifest order so that the message does not depend on timing.
func (c *treeClaims) conflict(p string, a int, aDir bool, b int, bDir bool) error {
	if a > b {
		a, aDir, b, bDir = b, bDir, a, aDir
	}
	kind := func(dir bool) string {
		if dir {
			return "a directory"
		}
		return "a file"
	}
	if aDir == bDir {
		return fmt.Errorf("path %q is written by both %s and %s; a model's file paths must be unique, so this version is refused rather than keep either", p, c.layerName(a), c.layerName(b))
	}
	return fmt.Errorf("path %q is %s in %s and %s in %s; this version is refused rather than keep either", p, kind(aDir), c.layerName(a), kind(bDir), c.layerName(b))
}

// claim records that layer i writes p, a directory or a file, and its
// parent directories. attempt holds the paths this attempt at layer i has
// already claimed (nil for raw layers): a path claimed by the same layer on
// an earlier, failed attempt is written again, not refused.
func (c *treeClaims) claim(p string, i int, dir bool, attempt map[string]bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if j, ok := c.files[d]; ok {
			return c.conflict(d, j, false, i, true)
		}
		if _, ok := c.dirs[d]; !ok {
			c.dirs[d] = i
		}
	}
	if dir {
		if j, ok := c.files[p]; ok {
			return c.conflict(p, j, false, i, true)
		}
		if _, ok := c.dirs[p]; !ok {
			c.dirs[p] = i
		}
		return nil
	}
	if j, ok := c.dirs[p]; ok {
		return c.conflict(p, j, true, i, false)
	}
	if attempt != nil && attempt[p] {
		return fmt.Errorf("path %q appears twice in %s; a model's file paths must be unique, so this version is refused rather than keep either", p, c.layerName(i))
	}
	if j, ok := c.files[p]; ok && j != i {
		return c.conflict(p, j, false, i, false)
	}
	c.files[p] = i
	if attempt != nil {
		attempt[p] = true
	}
	return nil
}
