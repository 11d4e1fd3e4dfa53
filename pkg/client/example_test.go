package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/server"
	"github.com/modelreg/modelreg/pkg/transfer"
)

// registry starts an in-process modelreg serve on a free loopback port and
// a model directory to push; stop ends both.
func registry() (addr, modelDir string, stop func()) {
	dir, err := os.MkdirTemp("", "modelreg-example-")
	if err != nil {
		log.Fatal(err)
	}
	modelDir = filepath.Join(dir, "model")
	os.MkdirAll(modelDir, 0o755)
	os.WriteFile(filepath.Join(modelDir, "model.safetensors"), []byte("weights"), 0o644)
	os.WriteFile(filepath.Join(modelDir, "config.json"), []byte(`{"hidden_size": 64}`), 0o644)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	server.LogDistributionTo(quiet)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, server.Options{Addr: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"), Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()
	return s.Addr(), modelDir, func() { cancel(); <-done; os.RemoveAll(dir) }
}

func newClient() *client.Client {
	o := client.DefaultOptions()
	o.CacheDir = "" // examples leave nothing in the user's cache
	o.Actor = "example"
	return client.New(o)
}

// Push a directory as an immutable version, with metadata in its manifest.
func ExampleClient_Push() {
	addr, dir, stop := registry()
	defer stop()
	c := newClient()
	meta := model.Metadata{Framework: "pytorch", Metrics: map[string]float64{"accuracy": 0.93}}
	res, err := c.Push(context.Background(), addr+"/team/fraud:1.0.0", []string{dir}, client.PushOptions{Metadata: meta})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Files, "files pushed")
	// Output: 2 files pushed
}

// Promote a version to a stage; modelreg serve records the move in its
// signed history.
func ExampleClient_Promote() {
	addr, dir, stop := registry()
	defer stop()
	c := newClient()
	ctx := context.Background()
	if _, err := c.Push(ctx, addr+"/team/fraud:1.0.0", []string{dir}, client.PushOptions{}); err != nil {
		log.Fatal(err)
	}
	res, err := c.Promote(ctx, addr+"/team/fraud:1.0.0", "staging", client.MoveOptions{Reason: "passed the holdout"})
	if err != nil {
		log.Fatal(err)
	}
	hist, err := c.History(ctx, addr+"/team/fraud", "staging")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Record.Version, res.Record.Reason, len(hist), hist[0].Trusted)
	// Output: [1.0.0] passed the holdout 1 true
}

// Pull a stage like any version: every blob is verified.
func ExampleClient_Pull() {
	addr, dir, stop := registry()
	defer stop()
	c := newClient()
	ctx := context.Background()
	if _, err := c.Push(ctx, addr+"/team/fraud:1.0.0", []string{dir}, client.PushOptions{}); err != nil {
		log.Fatal(err)
	}
	out := filepath.Join(filepath.Dir(dir), "pulled")
	res, err := c.Pull(ctx, addr+"/team/fraud:1.0.0", out, transfer.PullOptions{})
	if err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(out, "config.json"))
	fmt.Println(res.Files, string(b))
	// Output: 2 {"hidden_size": 64}
}

// List a model's versions and the stages on them.
func ExampleClient_List() {
	addr, dir, stop := registry()
	defer stop()
	c := newClient()
	ctx := context.Background()
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := c.Push(ctx, addr+"/team/fraud:"+v, []string{dir}, client.PushOptions{Metadata: model.Metadata{Description: v}}); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := c.Promote(ctx, addr+"/team/fraud:1.1.0", "production", client.MoveOptions{}); err != nil {
		log.Fatal(err)
	}
	l, err := c.List(ctx, addr+"/team/fraud")
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range l.Versions {
		fmt.Println(v.Tag, v.Stages)
	}
	// Unordered output:
	// 1.1.0 [production]
	// 1.0.0 []
}
