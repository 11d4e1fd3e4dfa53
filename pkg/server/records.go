package server

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// decoder reads records found in storage and tells the server's own
// (signed with its key, in the exact manifest the server writes) from the
// rest, which are kept but never count.
type decoder struct {
	pub ed25519.PublicKey
}

func recordAnnotations(stage string, t time.Time) map[string]string {
	a := map[string]string{mediatypes.AnnotationCreated: t.UTC().Format(time.RFC3339Nano)}
	if stage != "" {
		a[mediatypes.AnnotationPromotionStage] = stage
	}
	return a
}

// subjectOf returns the subject a referrer manifest names.
func subjectOf(raw []byte) (ocispec.Descriptor, bool) {
	var m ocispec.Manifest
	if json.Unmarshal(raw, &m) != nil || m.Subject == nil {
		return ocispec.Descriptor{}, false
	}
	return *m.Subject, true
}

// canonical reports whether m is byte for byte the manifest the server
// writes for this layer: a signed envelope copied into another manifest
// (a replay) is not the server's record.
func canonical(m index.Manifest, artifactType string, layer ocispec.Descriptor, blob []byte, stage string, t time.Time) bool {
	subject, ok := subjectOf(m.Raw)
	if !ok {
		return false
	}
	want, _, err := promotion.ReferrerManifest(subject, artifactType, layer.MediaType, blob, recordAnnotations(stage, t))
	return err == nil && digest.FromBytes(want) == m.Digest
}

func (d *decoder) promotion(m index.Manifest, layer ocispec.Descriptor, blob []byte) (index.Promotion, error) {
	payload, signed, err := promotion.Unseal(layer.MediaType, blob, mediatypes.ArtifactTypePromotion, d.pub)
	if err != nil {
		return index.Promotion{}, err
	}
	var r promotion.Record
	if err := json.Unmarshal(payload, &r); err != nil {
		return index.Promotion{}, fmt.Errorf("promotion record %s: %w", m.Digest, err)
	}
	if r.Stage == "" {
		return index.Promotion{}, fmt.Errorf("promotion record %s names no stage", m.Digest)
	}
	if signed {
		subject, _ := subjectOf(m.Raw)
		want := r.Digest
		if r.Kind == promotion.KindRemoval || r.Kind == promotion.KindAnchor && r.Digest == "" {
			want = r.Previous
		}
		// The exact manifest the server writes, about the version it names,
		// in the repository it was written for: a signed record copied into
		// another repository is not that repository's history.
		signed = canonical(m, mediatypes.ArtifactTypePromotion, layer, blob, r.Stage, r.Time) && subject.Digest.String() == want && r.Repository == m.Repo
	}
	r.Record, r.Trusted = m.Digest.String(), signed
	body, err := json.Marshal(r)
	if err != nil {
		return index.Promotion{}, err
	}
	p := index.Promotion{Stage: r.Stage, Digest: r.Digest, Time: r.Time, Trusted: signed, Body: body}
	if signed {
		p.Seq, p.PrevRecord = r.Seq, r.PreviousRecord
		if r.Kind == promotion.KindAnchor {
			p.Adopts = r.Anchors
		}
	}
	return p, nil
}

// tombstone returns the version tags a signed tombstone retired.
func (d *decoder) tombstone(m index.Manifest, layer ocispec.Descriptor, blob []byte) ([]index.Retirement, error) {
	payload, signed, err := promotion.Unseal(layer.MediaType, blob, mediatypes.ArtifactTypeTombstone, d.pub)
	if err != nil {
		return nil, err
	}
	var t promotion.Tombstone
	if err := json.Unmarshal(payload, &t); err != nil {
		return nil, err
	}
	if !signed || t.Repository != m.Repo || !canonical(m, mediatypes.ArtifactTypeTombstone, layer, blob, "", t.Time) {
		return nil, errors.New("tombstone not written by this registry")
	}
	var out []index.Retirement
	for _, tag := range t.Tags {
		out = append(out, index.Retirement{Tag: tag, Digest: t.Digest, Tombstone: m.Digest.String(), Actor: t.Actor, Reason: t.Reason})
	}
	return out, nil
}
