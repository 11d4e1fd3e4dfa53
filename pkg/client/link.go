package client

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/modelreg/modelreg/pkg/remote"
)

// Dedupe is how a push avoids sending blobs the registry already has when
// the digest cache does not know a file (a fresh CI runner, a copied
// directory).
type Dedupe string

const (
	// DedupeAuto hashes first unless the link is known to be about as fast
	// as hashing (docs/transfer.md gives the measured rule).
	DedupeAuto Dedupe = "auto"
	// DedupeHash always hashes first: a blob the registry has is never sent.
	DedupeHash Dedupe = "hash"
	// DedupeStream sends every unknown file in one read, hashing as it goes.
	DedupeStream Dedupe = "stream"
)

// fastLink is the upload speed above which hashing a file before sending
// it costs more than a quarter of the push: SHA-256 of a page-cached file
// runs at about 1.4 GB/s on this project's machines (docs/transfer.md).
const fastLink = 350e6 // bytes per second

// hashFirst decides whether a push to host hashes unknown files first:
// by the speed the last large push to host reached when one is remembered
// (below fastLink: hash first), else not on loopback (the registry is as
// fast as the disk) and yes anywhere else.
func (c *Client) hashFirst(host string, d Dedupe) (bool, error) {
	switch d {
	case DedupeHash:
		return true, nil
	case DedupeStream:
		return false, nil
	case DedupeAuto, "":
	default:
		return false, usage(fmt.Errorf("dedupe %q: expected auto, hash or stream", d))
	}
	if speed, ok := c.links()[host]; ok {
		return speed < fastLink, nil // measured on an earlier push: trust it
	}
	return !remote.IsLocalhost(host), nil
}

// links reads the upload speeds remembered per registry host.
func (c *Client) links() map[string]float64 {
	out := map[string]float64{}
	if p := c.cachePath("links.json"); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			json.Unmarshal(b, &out)
		}
	}
	return out
}

// rememberLink keeps the speed a push to host reached (bytes per second
// of the whole push, so a little under the link's), for the next push's
// dedupe decision. Only pushes that sent 64 MiB or more say anything.
func (c *Client) rememberLink(host string, sent int64, took time.Duration) {
	p := c.cachePath("links.json")
	if p == "" || sent < 64<<20 || took <= 0 {
		return
	}
	links := c.links()
	links[host] = float64(sent) / took.Seconds()
	b, err := json.Marshal(links)
	if err != nil {
		return
	}
	os.MkdirAll(filepath.Dir(p), 0o700)
	tmp := p + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, p)
	}
}
