package client

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/transfer"
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
	if l, ok := c.links()[host]; ok {
		return l.Push < fastLink, nil // measured on an earlier push: trust it
	}
	return !remote.IsLocalhost(host), nil
}

// link is what the client remembers of a registry host's link from the
// last push that sent 64 MiB or more.
type link struct {
	// Push is the whole push's rate, bytes per second of wall time (all
	// files and connections together): the dedupe rule's measure.
	Push float64 `json:"push"`
	// Connection is the fastest one upload request ran: what a single
	// connection carries, the parts rule's measure (0: not measured).
	Connection float64 `json:"connection,omitempty"`
}

// partConnections decides over how many connections a push sends one
// large file (parts, to a registry that takes them): n when the caller
// chose; else one on loopback (the registry is as fast as the disk, and
// parts cost the server a second write) or when an earlier push saw one
// connection carry fastLink; else DefaultRangeConnections, as a pull.
func (c *Client) partConnections(host string, n int) int {
	switch {
	case n > 0:
		return n
	case remote.IsLocalhost(host):
		return 1
	case c.links()[host].Connection >= fastLink:
		return 1
	}
	return transfer.DefaultRangeConnections
}

// links reads what is remembered of each registry host's link.
func (c *Client) links() map[string]link {
	out := map[string]link{}
	if p := c.cachePath("links.json"); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			json.Unmarshal(b, &out) // another format (an older client's): start afresh
		}
	}
	return out
}

// rememberLink keeps the rate a push to host reached (bytes per second of
// the whole push, so a little under the link's) and the fastest single
// upload request, for the next push's dedupe and parts decisions. Only
// pushes that sent 64 MiB or more say anything.
func (c *Client) rememberLink(host string, sent int64, took time.Duration, connection float64) {
	p := c.cachePath("links.json")
	if p == "" || sent < 64<<20 || took <= 0 {
		return
	}
	links := c.links()
	l := link{Push: float64(sent) / took.Seconds(), Connection: connection}
	if l.Connection == 0 {
		l.Connection = links[host].Connection
	}
	links[host] = l
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
