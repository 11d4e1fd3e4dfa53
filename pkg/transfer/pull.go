package transfer

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/progress"
	"github.com/modelreg/modelreg/pkg/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// PullOptions tunes Pull. The zero value is usable.
type PullOptions struct {
	// Concurrency is how many files are downloaded at once; 0 picks a default.
	Concurrency int
	// Attempts is how many times one blob is tried; 0 means 4.
	Attempts int
	// Progress reports each file; nil reports nothing.
	Progress progress.Reporter
}

// PullResult is what a pull did.
type PullResult struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	Dir       string `json:"dir"`
	Files     int    `json:"files"`
	Size      int64  `json:"size"`
}

// Fetch resolves ref and reads its manifest as a model version, verifying
// the manifest's digest and size. A transient failure is retried.
func Fetch(ctx context.Context, repo registry.ReferenceFetcher, ref registry.Reference) (*model.Version, error) {
	var (
		desc ocispec.Descriptor
		raw  []byte
	)
	err := retry(ctx, 4, func() error {
		d, rc, err := repo.FetchReference(ctx, ref.Reference)
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

// Pull downloads the version ref into dir. Every blob is verified against
// its digest while it is written. Files go into a temporary directory beside
// dir that is renamed into place only when everything is verified, so a
// failed or interrupted pull leaves nothing at dir. dir must not exist or be
// an empty directory.
func Pull(ctx context.Context, repo registry.Repository, ref registry.Reference, dir string, opts PullOptions) (*PullResult, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = max(4, runtime.NumCPU())
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 4
	}
	if opts.Progress == nil {
		opts.Progress = progress.Discard()
	}
	if err := checkDest(dir); err != nil {
		return nil, err
	}
	v, err := Fetch(ctx, repo, ref)
	if err != nil {
		return nil, err
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

	if err := retry(ctx, opts.Attempts, func() error { return fetchVerified(ctx, repo, v.Config, io.Discard) }); err != nil {
		return nil, fmt.Errorf("%s: config blob: %w", ref, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Concurrency)
	for _, f := range v.Files {
		g.Go(func() error {
			t := opts.Progress.Track("pulled", f.Path, f.Descriptor.Size)
			err := retry(gctx, opts.Attempts, func() error { return pullFile(gctx, repo, root, f, t) })
			if err != nil {
				err = fmt.Errorf("%s: %w", f.Path, remote.Explain(err, ref.String()))
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
	return &PullResult{Reference: ref.String(), Digest: v.Descriptor.Digest.String(), Dir: dir, Files: len(v.Files), Size: v.Size()}, nil
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

func fetchVerified(ctx context.Context, repo registry.Repository, desc ocispec.Descriptor, w io.Writer) error {
	rc, err := repo.Blobs().Fetch(ctx, desc)
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

func pullFile(ctx context.Context, repo registry.Repository, root *os.Root, f model.FileEntry, t progress.Tracker) error {
	rc, err := repo.Blobs().Fetch(ctx, f.Descriptor)
	if err != nil {
		return err
	}
	defer rc.Close()
	vr := content.NewVerifyReader(progress.Reader(rc, t), f.Descriptor)
	switch f.Encoding {
	case mediatypes.EncodingRaw:
		if err := writeFile(root, f.Path, f.Mode, vr); err != nil {
			return err
		}
	case mediatypes.EncodingTar:
		if err := extractTar(root, vr); err != nil {
			return err
		}
	case mediatypes.EncodingTarGzip:
		zr, err := gzip.NewReader(vr)
		if err != nil {
			return fmt.Errorf("layer is not gzip: %w", err)
		}
		if err := extractTar(root, zr); err != nil {
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
	return root.Chmod(name, mode.Perm())
}

// extractTar unpacks regular files and directories; links and devices in a
// layer are refused, as are entries that would leave the tree.
func extractTar(root *os.Root, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar layer: %w", err)
		}
		name := path.Clean(h.Name)
		if err := model.CheckPath(name); err != nil {
			return fmt.Errorf("tar entry: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(filepath.FromSlash(name), 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := writeFile(root, name, fs.FileMode(h.Mode).Perm(), tr); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar entry %q is a link or special file; only files and directories are extracted", h.Name)
		}
	}
}
