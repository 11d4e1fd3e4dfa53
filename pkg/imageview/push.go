package imageview

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/modelreg/modelreg/pkg/model"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
)

// Source is one file of a version, as a writer of its view reads it.
type Source struct {
	File
	// Open returns the file's bytes (exactly File.Size of them).
	Open func() (io.ReadCloser, error)
}

// Sources pairs a version's layers with the readers of their bytes
// (open(i) for layer i): every layer must be a raw file layer.
func Sources(v *model.Version, open func(i int, f model.FileEntry) (io.ReadCloser, error)) ([]Source, error) {
	out := make([]Source, len(v.Files))
	for i, f := range v.Files {
		if f.Encoding != "raw" {
			return nil, fmt.Errorf("%s is a %s layer: image views are made of raw file layers only (push the files with modelreg or oras)", f.Path, f.Encoding)
		}
		out[i] = Source{
			File: File{Path: f.Path, Mode: f.Mode, Size: f.Descriptor.Size, Raw: f.Descriptor.Digest},
			Open: func() (io.ReadCloser, error) { return open(i, f) },
		}
	}
	return out, nil
}

// Written is what Push did: the view, and the bytes it sent.
type Written struct {
	View *View
	// Sent is the tar layer bytes uploaded (the size of the model again:
	// a registry other than modelreg serve stores the view as real tars).
	Sent int64
	// Reused is the tar layer bytes the target already held.
	Reused int64
}

// Push writes the image view of the version described by version into
// target with real tar layers: each file is read once for its tar digest,
// then once more to upload the layer when target lacks it; then the
// configs, the manifests and the index (whose subject is the version, so
// the view is listed among the version's referrers). concurrency bounds
// the files at once.
func Push(ctx context.Context, target oras.Target, version ocispec.Descriptor, srcs []Source, concurrency int) (*Written, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	files := make([]File, len(srcs))
	for i, s := range srcs {
		g.Go(func() error {
			rc, err := s.Open()
			if err != nil {
				return err
			}
			defer rc.Close()
			d, err := TarDigest(s.Path, s.Mode, s.Size, rc)
			if err != nil {
				return err
			}
			files[i] = s.File
			files[i].Tar = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	view, err := Build(version, files)
	if err != nil {
		return nil, err
	}
	var sent, reused atomic.Int64
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for i, s := range srcs {
		desc := view.Layers[i]
		g.Go(func() error {
			ok, err := target.Exists(gctx, desc)
			if err != nil {
				return err
			}
			if ok {
				reused.Add(desc.Size)
				return nil
			}
			rc, err := s.Open()
			if err != nil {
				return err
			}
			defer rc.Close()
			layer, err := Layer(s.Path, s.Mode, s.Size, rc)
			if err != nil {
				return err
			}
			if err := target.Push(gctx, desc, layer); err != nil {
				return fmt.Errorf("uploading the image view layer of %s: %w", s.Path, err)
			}
			sent.Add(desc.Size)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// Configs, then manifests, then the index: each after what it names.
	for _, b := range append(append(append([]Blob(nil), view.Configs...), view.Manifests...), Blob{view.Descriptor, view.Index}) {
		ok, err := target.Exists(ctx, b.Descriptor)
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := target.Push(ctx, b.Descriptor, bytes.NewReader(b.Bytes)); err != nil {
				return nil, fmt.Errorf("uploading the image view: %w", err)
			}
		}
	}
	return &Written{View: view, Sent: sent.Load(), Reused: reused.Load()}, nil
}
