package client_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/transfer"
	"oras.land/oras-go/v2/content/oci"
)

// An OCI layout directory is a target like a registry: push a model into
// one, pull it back, files and modes intact.
func TestPushPullOCILayout(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "model")
	os.MkdirAll(filepath.Join(src, "tokenizer"), 0o755)
	os.WriteFile(filepath.Join(src, "model.safetensors"), []byte("weights"), 0o644)
	os.WriteFile(filepath.Join(src, "tokenizer", "vocab.txt"), []byte("a\nb\n"), 0o600)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	store, err := oci.New(filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient()
	ctx := context.Background()
	meta := model.Metadata{Framework: "pytorch", Metrics: map[string]float64{"accuracy": 0.5}}
	pushed, err := c.PushTo(ctx, store, "1.0.0", []string{src}, client.PushOptions{Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	if pushed.Files != 3 {
		t.Errorf("pushed %d files, want 3", pushed.Files)
	}
	// A second push of the same content is a no-op; other content is refused.
	if again, err := c.PushTo(ctx, store, "1.0.0", []string{src}, client.PushOptions{Metadata: meta}); err != nil || !again.Unchanged {
		t.Errorf("identical re-push: %+v, %v", again, err)
	}
	out := filepath.Join(dir, "out")
	pulled, err := c.PullFrom(ctx, store, "1.0.0", out, transfer.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pulled.Digest != pushed.Digest {
		t.Errorf("pulled %s, pushed %s", pulled.Digest, pushed.Digest)
	}
	for name, want := range map[string]os.FileMode{"model.safetensors": 0o644, "tokenizer/vocab.txt": 0o600, "run.sh": 0o755} {
		info, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, info.Mode().Perm(), want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "tokenizer", "vocab.txt")); string(b) != "a\nb\n" {
		t.Errorf("vocab.txt: %q", b)
	}
	// The same model pushed to the layout and to a registry has one digest.
	addr, _, stop := registry()
	defer stop()
	viaRegistry, err := c.Push(ctx, addr+"/team/fraud:1.0.0", []string{src}, client.PushOptions{Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	if viaRegistry.Digest != pushed.Digest {
		t.Errorf("layout digest %s, registry digest %s", pushed.Digest, viaRegistry.Digest)
	}
}
