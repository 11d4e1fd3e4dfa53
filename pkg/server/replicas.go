package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/index"
)

// Replicas on one PostgreSQL index must gate alike: each publishes the
// digests of the trust and access policies it enforces, as a heartbeat
// under its own id, and a stage move into a protected stage is refused
// on every replica while the live ones disagree (a policy file updated on
// some replicas and not yet on others), instead of being decided by
// whichever replica the load balancer picked.
const (
	trustKey  = "policy/trust/"
	accessKey = "policy/access/"
	// heartbeat is how often a replica publishes; a replica silent for
	// liveFor is taken for gone.
	heartbeat = 5 * time.Second
	liveFor   = 30 * time.Second
)

// replicaID names this process among the replicas.
func replicaID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// digests are the policies this replica enforces now.
func (s *Server) digests() (trust, acc string) {
	if s.gate != nil {
		if p := s.gate.policy(); p != nil {
			trust = p.Digest
		}
	}
	if s.access != nil {
		acc = s.access.current().Digest
	}
	return trust, acc
}

// publish runs the heartbeat until ctx is done (PostgreSQL only: a
// SQLite index has one process).
func (s *Server) publish(ctx context.Context) {
	if s.idx == nil || s.idx.Backend() != index.Postgres {
		return
	}
	for {
		select {
		case <-ctx.Done():
			s.unpublish()
			return
		case <-time.After(heartbeat):
		}
		s.publishOnce(ctx)
	}
}

// publishOnce publishes this replica's digests; Serve calls it before it
// accepts requests, so a replica that disagrees is seen from its first.
func (s *Server) publishOnce(ctx context.Context) {
	if s.idx == nil || s.idx.Backend() != index.Postgres {
		return
	}
	trust, acc := s.digests()
	if err := s.idx.Publish(ctx, trustKey+s.id, orNone(trust), s.id); err != nil && ctx.Err() == nil {
		s.log.Warn("publishing this replica's policy digest", "err", err)
	}
	if err := s.idx.Publish(ctx, accessKey+s.id, orNone(acc), s.id); err != nil && ctx.Err() == nil {
		s.log.Warn("publishing this replica's access policy digest", "err", err)
	}
}

// unpublish removes this replica's heartbeat when it stops cleanly, so
// the others do not wait liveFor to agree again.
func (s *Server) unpublish() {
	if s.idx == nil || s.idx.Backend() != index.Postgres {
		return
	}
	for _, k := range []string{trustKey, accessKey} {
		if err := s.idx.Unpublish(context.Background(), k+s.id); err != nil {
			s.log.Warn("removing this replica's policy digest", "err", err)
		}
	}
}

// agree returns a refusal when the live replicas enforce different trust
// or access policies; nil when they agree (or there is one process).
func (g *gate) agree(ctx context.Context) error {
	if g.idx.Backend() != index.Postgres {
		return nil
	}
	for _, k := range []struct{ prefix, what string }{{trustKey, "trust policies"}, {accessKey, "access policies"}} {
		seen, err := g.idx.Agreed(ctx, k.prefix, liveFor)
		if err != nil {
			return err
		}
		if len(seen) > 1 {
			var parts []string
			for _, d := range slices.Sorted(func(yield func(string) bool) {
				for d := range seen {
					if !yield(d) {
						return
					}
				}
			}) {
				parts = append(parts, fmt.Sprintf("%s on %s", d, strings.Join(seen[d], ", ")))
			}
			return denied{fmt.Sprintf("the replicas of this registry enforce different %s (%s): stage moves into protected stages are refused until every replica reads the same file", k.what, strings.Join(parts, "; "))}
		}
	}
	return nil
}
