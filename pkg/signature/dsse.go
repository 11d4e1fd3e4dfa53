package signature

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"slices"

	"github.com/modelreg/modelreg/pkg/key"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// DSSE envelopes (sigstore bundles' dsseEnvelope, cosign v2's .att layers)
// are built, encoded and verified by go-securesystemslib's dsse package,
// the implementation cosign itself uses; these adapters give it modelreg's
// cosign keys.

// dsseSigner signs the PAE with a cosign key (ECDSA over its SHA-256).
type dsseSigner struct{ priv key.Private }

func (s dsseSigner) Sign(_ context.Context, data []byte) ([]byte, error) { return s.priv.Sign(data) }

// KeyID is empty, as in the envelopes cosign writes: a bundle names its key
// in verificationMaterial.publicKey.hint, and sigstore-go's verifier skips
// a signature whose keyid differs from the one it computes for the key.
func (dsseSigner) KeyID() (string, error) { return "", nil }

// dsseVerifier checks a DSSE signature with a trusted cosign key.
type dsseVerifier struct{ pub key.Public }

func (v dsseVerifier) Verify(_ context.Context, data, sig []byte) error {
	if !v.pub.Verify(data, sig) {
		return errors.New("signature does not verify")
	}
	return nil
}

// KeyID is the key's fingerprint, so the verifier's accepted keys say
// which trusted key signed.
func (v dsseVerifier) KeyID() (string, error)   { return v.pub.Fingerprint, nil }
func (v dsseVerifier) Public() crypto.PublicKey { return v.pub.Key }

// signEnvelope signs payload of payloadType with priv: one signature.
func signEnvelope(ctx context.Context, priv key.Private, payloadType string, payload []byte) (*dsse.Envelope, error) {
	s, err := dsse.NewEnvelopeSigner(dsseSigner{priv})
	if err != nil {
		return nil, err
	}
	return s.SignPayload(ctx, payloadType, payload)
}

// verifyEnvelope returns the fingerprint of a key among keys that verified
// one of env's signatures, or "" when none did.
func verifyEnvelope(ctx context.Context, env *dsse.Envelope, keys []key.Public) string {
	var vs []dsse.Verifier
	seen := map[string]bool{}
	for _, k := range keys {
		// One verifier per key: a policy may name the same key twice, and
		// the verifier counts (and prints) duplicate key IDs.
		if !seen[k.Fingerprint] {
			seen[k.Fingerprint] = true
			vs = append(vs, dsseVerifier{k})
		}
	}
	if len(vs) == 0 {
		return ""
	}
	ev, err := dsse.NewEnvelopeVerifier(vs...)
	if err != nil {
		return ""
	}
	// Key IDs are unsigned labels that tools fill as they like (cosign
	// leaves them empty, other signers put a KMS name): the policy, and a
	// bundle's key hint, choose the keys tried, so key IDs are not matched.
	e := *env
	e.Signatures = slices.Clone(env.Signatures)
	for i := range e.Signatures {
		e.Signatures[i].KeyID = ""
	}
	accepted, err := ev.Verify(ctx, &e)
	if err != nil || len(accepted) == 0 {
		return ""
	}
	return accepted[0].KeyID
}

// decodeSig decodes a DSSE signature: standard or URL base64, as the DSSE
// envelope specification allows.
func decodeSig(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.URLEncoding.DecodeString(s)
	}
	return b, err
}
