// Command library pushes a model, promotes it to staging and pulls it back
// through pkg/client: modelreg as a Go library.
//
//	go run ./examples/library localhost:5000/team/demo ./model ./pulled
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/modelreg/modelreg/pkg/client"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/transfer"
)

func main() {
	repo, src, dst := os.Args[1], os.Args[2], os.Args[3]
	ctx := context.Background()
	c := client.New(client.DefaultOptions())
	meta := model.Metadata{Framework: "pytorch", Metrics: map[string]float64{"accuracy": 0.93}}
	pushed, err := c.Push(ctx, repo+":1.0.0", []string{src}, client.PushOptions{Metadata: meta})
	if err != nil {
		log.Fatal(err)
	}
	moved, err := c.Promote(ctx, repo+":1.0.0", "staging", client.MoveOptions{Reason: "from the library example"})
	if err != nil {
		log.Fatal(err)
	}
	pulled, err := c.Pull(ctx, repo+":staging", dst, transfer.PullOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pushed.Digest, moved.Record.Record, pulled.Files)
}
