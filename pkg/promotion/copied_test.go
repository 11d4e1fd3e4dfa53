package promotion_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"crypto/ed25519"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/promotion"
)

// A record copied from another registry is trusted only when a listed key
// verifies it; an unsigned one never is; on a plain registry only the
// unsigned records written for exactly this repository are its own.
func TestExamineOrigin(t *testing.T) {
	dev, err := promotion.LoadOrCreateServerKey(filepath.Join(t.TempDir(), "dev.pem"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := promotion.LoadOrCreateServerKey(filepath.Join(t.TempDir(), "other.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rec := promotion.Record{Repository: "team/m", Stage: "production", Digest: "sha256:aa", Time: time.Unix(100, 0).UTC(), Keys: []string{}}
	payload, _ := json.Marshal(rec)
	sealed, err := dev.Seal(mediatypes.ArtifactTypePromotion, payload)
	if err != nil {
		t.Fatal(err)
	}

	e, err := promotion.Examine(mediatypes.DSSEEnvelope, sealed, map[string]ed25519.PublicKey{"dev": dev.Public(), "other": other.Public()})
	if err != nil || !e.Origin.Trusted || e.Origin.Registry != "dev" || e.Origin.KeyID != promotion.KeyID(dev.Public()) || e.Origin.Source() != "team/m at dev" {
		t.Fatalf("signed by a listed key: %+v %v", e.Origin, err)
	}
	e, err = promotion.Examine(mediatypes.DSSEEnvelope, sealed, map[string]ed25519.PublicKey{"other": other.Public()})
	if err != nil || e.Origin.Trusted || e.Origin.KeyID != promotion.KeyID(dev.Public()) || e.Origin.Problem == "" || promotion.OwnOnPlain(e, "team/m") {
		t.Fatalf("signed by an unlisted key: %+v %v", e.Origin, err)
	}

	plain := rec
	plain.Repository = "plain:5000/team/m"
	bare, _ := json.Marshal(plain)
	e, err = promotion.Examine(mediatypes.ArtifactTypePromotion, bare, map[string]ed25519.PublicKey{"dev": dev.Public()})
	if err != nil || e.Origin.Trusted || e.Origin.KeyID != "" || e.Origin.Problem == "" {
		t.Fatalf("unsigned: %+v %v", e.Origin, err)
	}
	if !promotion.OwnOnPlain(e, "plain:5000/team/m") || promotion.OwnOnPlain(e, "plain:5000/team/m2") || promotion.OwnOnPlain(e, "other:5000/team/m") {
		t.Errorf("OwnOnPlain: only the unsigned records written for exactly this repository are its own")
	}

	// Group: one history per origin, trusted first, records newest first.
	newer := rec
	newer.Time, newer.Digest, newer.Previous = rec.Time.Add(time.Hour), "sha256:bb", "sha256:aa"
	np, _ := json.Marshal(newer)
	nsealed, _ := dev.Seal(mediatypes.ArtifactTypePromotion, np)
	keys := map[string]ed25519.PublicKey{"dev": dev.Public()}
	var found []promotion.Examined
	for _, l := range []struct {
		mt   string
		blob []byte
	}{{mediatypes.ArtifactTypePromotion, bare}, {mediatypes.DSSEEnvelope, sealed}, {mediatypes.DSSEEnvelope, nsealed}} {
		e, err := promotion.Examine(l.mt, l.blob, keys)
		if err != nil {
			t.Fatal(err)
		}
		found = append(found, e)
	}
	g := promotion.Group(found)
	if len(g) != 2 || !g[0].Trusted || len(g[0].Records) != 2 || g[0].Records[0].Digest != "sha256:bb" || !g[0].Records[0].Trusted || g[1].Trusted || len(g[1].Records) != 1 {
		t.Errorf("Group: %+v", g)
	}
}
