package promotion

import (
	"cmp"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// A registry's history of a stage is its own records: on modelreg serve
// the ones it signed, in its chain; on another registry the ones its
// clients wrote for it. Records copied from elsewhere (modelreg copy
// carries every referrer of a version) are another registry's history:
// kept, shown apart as "history at <source>", and never merged into the
// destination's (docs/promotion.md, "History at the source").

// Origin is where a record that is not this registry's own history was
// written, as the record itself tells: its repository field and the key
// that signed it. modelreg serve does not write its host into its records,
// so a registry is named by its key: the name the destination's trust
// policy gives it under registries:.
type Origin struct {
	// Repository is the record's repository field: REGISTRY/REPO in a
	// record a client wrote, REPO in one modelreg serve wrote.
	Repository string `json:"repository"`
	// KeyID is the fingerprint of the key that signed the record: the one
	// that verified it when Trusted, else the one its envelope claims (""
	// for an unsigned record, as clients write on plain registries).
	KeyID string `json:"keyId,omitempty"`
	// Registry is the name of that key in the trust policy (registries:),
	// or ThisRegistry for the registry's own key (a record copied between
	// two repositories of one modelreg serve).
	Registry string `json:"registry,omitempty"`
	// Trusted is true when a key the destination lists verified the
	// record: it is then the source's history, authentic, but still not
	// the destination's.
	Trusted bool `json:"trusted"`
	// Problem says why an untrusted record is not trusted.
	Problem string `json:"problem,omitempty"`
}

// ThisRegistry names the registry's own key in an Origin.
const ThisRegistry = "this registry"

// Source names the origin for people: "team/fraud at dev" when a listed
// key signed it, else the record's repository.
func (o Origin) Source() string {
	if o.Registry != "" {
		return o.Repository + " at " + o.Registry
	}
	return o.Repository
}

// Copied is one source's history of a stage, as found in this registry:
// the records of one origin, newest first.
type Copied struct {
	Origin
	Records []Record `json:"records"`
}

// Examined is a record read with its origin.
type Examined struct {
	Record Record
	Origin Origin
	// Enveloped is true when the record is a DSSE envelope (written by a
	// modelreg serve), false for the bare JSON a client writes.
	Enveloped bool
}

// Examine reads a promotion record's layer (a DSSE envelope, or the bare
// JSON a client writes) and tells where it came from: trusted when one of
// keys (name -> key) verifies the envelope.
func Examine(layerMediaType string, blob []byte, keys map[string]ed25519.PublicKey) (Examined, error) {
	var e Examined
	payload, _, err := Unseal(layerMediaType, blob, mediatypes.ArtifactTypePromotion, nil)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(payload, &e.Record); err != nil {
		return e, fmt.Errorf("not a promotion record: %w", err)
	}
	e.Origin.Repository = e.Record.Repository
	if layerMediaType != mediatypes.DSSEEnvelope {
		e.Origin.Problem = "unsigned: written by a client, which any account with push rights can do"
		return e, nil
	}
	e.Enveloped = true
	for _, name := range slices.Sorted(maps.Keys(keys)) {
		if _, ok, _ := Unseal(layerMediaType, blob, mediatypes.ArtifactTypePromotion, keys[name]); ok {
			e.Origin.KeyID, e.Origin.Registry, e.Origin.Trusted = KeyID(keys[name]), name, true
			return e, nil
		}
	}
	var env dsse.Envelope
	if json.Unmarshal(blob, &env) == nil && len(env.Signatures) > 0 {
		e.Origin.KeyID = env.Signatures[0].KeyID
	}
	e.Origin.Problem = "signed by a key the trust policy does not list under registries: (add the source registry's serverKey, from its /v2/_modelreg/v1/status, to trust it)"
	return e, nil
}

// Group collects examined records into one history per origin, each
// newest first; trusted sources first, then by repository and key.
func Group(found []Examined) []Copied {
	by := map[Origin]*Copied{}
	var out []*Copied
	for _, f := range found {
		c, ok := by[f.Origin]
		if !ok {
			c = &Copied{Origin: f.Origin}
			by[f.Origin] = c
			out = append(out, c)
		}
		r := f.Record
		r.Trusted = f.Origin.Trusted
		c.Records = append(c.Records, r)
	}
	slices.SortFunc(out, func(a, b *Copied) int {
		if a.Trusted != b.Trusted {
			if a.Trusted {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Registry, b.Registry), cmp.Compare(a.KeyID, b.KeyID))
	})
	res := make([]Copied, 0, len(out))
	for _, c := range out {
		Sort(c.Records)
		res = append(res, *c)
	}
	return res
}

// OwnOnPlain reports whether a record found on a registry other than
// modelreg serve is that repository's own history: written by a client
// (unsigned: modelreg serve signs every record it writes) for exactly
// name (REGISTRY/REPO as the history was asked). Anything else arrived
// by a copy.
func OwnOnPlain(e Examined, name string) bool {
	return !e.Enveloped && e.Record.Repository == name
}
