package promotion

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// ChainReport is what VerifyChain checked.
type ChainReport struct {
	Stage string `json:"stage"`
	// Records is the number of chained records verified; Adopted the
	// records from before the chain that an anchor vouches for.
	Records int    `json:"records"`
	Adopted int    `json:"adopted"`
	Head    string `json:"head,omitempty"`
	// Holds is what the stage tag points at now ("" when it is empty).
	Holds string `json:"holds"`
	KeyID string `json:"keyId"`
}

// ErrChainBroken means a stage's history is not the unbroken, signed chain
// it must be: a record is missing, edited, unsigned, out of order, or the
// stage tag points elsewhere than the newest record says.
var ErrChainBroken = errors.New("stage history does not verify")

// VerifyChain checks a stage's history as served (records, newest first)
// against the registry's storage, independently of the server's index:
// starting from the newest record, it fetches each record by digest,
// checks its signature with pub (the server's key), that its sequence
// number is one less each step, that each names the one before it, that
// the anchor's adopted records exist, that the served list is exactly the
// chain, and that the stage tag holds what the newest record says.
func VerifyChain(ctx context.Context, repo registry.Repository, stage string, served []Record, pub ed25519.PublicKey) (*ChainReport, error) {
	rep := &ChainReport{Stage: stage, KeyID: KeyID(pub)}
	cur, err := repo.Resolve(ctx, stage)
	switch {
	case remote.IsNotFound(err):
	case err != nil:
		return nil, err
	default:
		rep.Holds = cur.Digest.String()
	}
	broken := func(format string, args ...any) error {
		return fmt.Errorf("%w: stage %q: %s", ErrChainBroken, stage, fmt.Sprintf(format, args...))
	}
	var chained []Record
	adopted := map[string]bool{}
	for _, r := range served {
		if r.Seq > 0 {
			chained = append(chained, r)
		} else {
			adopted[r.Record] = true
		}
	}
	if len(chained) == 0 {
		if rep.Holds != "" && len(served) > 0 {
			return nil, broken("no record is signed by the registry")
		}
		return rep, nil
	}
	head := chained[0]
	rep.Head = head.Record
	if head.Digest != rep.Holds {
		return nil, broken("the newest record (%s, seq %d) says the stage holds %s, but the tag points at %s", head.Record, head.Seq, orNone(head.Digest), orNone(rep.Holds))
	}
	next := head.Record
	want := head.Seq
	for i := 0; next != ""; i++ {
		r, err := fetchSigned(ctx, repo, digest.Digest(next), pub)
		if err != nil {
			return nil, broken("record %s (seq %d): %v", next, want, err)
		}
		if r.Stage != stage || r.Seq != want {
			return nil, broken("record %s is seq %d of stage %q, want seq %d of %q", next, r.Seq, r.Stage, want, stage)
		}
		if i >= len(chained) || chained[i].Record != next {
			return nil, broken("record %s (seq %d) is in the chain but not in the history served", next, r.Seq)
		}
		for _, a := range r.Anchors {
			if !adopted[a] {
				return nil, broken("the anchor %s vouches for %s, which the history served lacks", next, a)
			}
			if _, err := repo.Resolve(ctx, a); err != nil {
				return nil, broken("the anchor %s vouches for %s, which storage lacks: %v", next, a, err)
			}
			rep.Adopted++
		}
		rep.Records++
		want--
		next = r.PreviousRecord
	}
	if want != 0 {
		return nil, broken("the chain ends at seq %d, not at 1: records before it are missing", want+1)
	}
	if rep.Records != len(chained) {
		return nil, broken("the history served has %d chained records, the chain %d", len(chained), rep.Records)
	}
	if rep.Adopted != len(adopted) {
		return nil, broken("%d records served are neither chained nor adopted by an anchor", len(adopted)-rep.Adopted)
	}
	return rep, nil
}

// fetchSigned reads a record by digest and checks its envelope with pub.
func fetchSigned(ctx context.Context, repo registry.Repository, d digest.Digest, pub ed25519.PublicKey) (*Record, error) {
	desc, rc, err := repo.Manifests().FetchReference(ctx, d.String())
	if err != nil {
		return nil, err
	}
	raw, err := content.ReadAll(rc, desc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || len(m.Layers) != 1 || m.ArtifactType != mediatypes.ArtifactTypePromotion {
		return nil, errors.New("not a promotion record")
	}
	blob, err := content.FetchAll(ctx, repo.Blobs(), m.Layers[0])
	if err != nil {
		return nil, err
	}
	payload, signed, err := Unseal(m.Layers[0].MediaType, blob, mediatypes.ArtifactTypePromotion, pub)
	if err != nil {
		return nil, err
	}
	if !signed {
		return nil, errors.New("not signed by the registry's key")
	}
	var r Record
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
