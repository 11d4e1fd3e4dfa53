package promotion

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Record kinds. A stage's history is a hash chain of records of these kinds,
// each naming the one before it by digest.
const (
	KindPromotion = "promotion"
	KindRollback  = "rollback"
	// KindRemoval empties a stage (its tag was deleted); Digest is "".
	KindRemoval = "removal"
	// KindAnchor starts the chain of a stage whose history began before
	// records were chained: it vouches for the older records it lists.
	KindAnchor = "anchor"
)

// Tombstone is the record of a deleted version: who deleted it, when, and
// the deleted manifest itself, so the deletion is an explicit, recorded act
// and the version tags it held are never reused.
type Tombstone struct {
	Repository string    `json:"repository"`
	Digest     string    `json:"digest"`
	MediaType  string    `json:"mediaType"`
	Tags       []string  `json:"tags"`
	Actor      string    `json:"actor"`
	Time       time.Time `json:"time"`
	// Reason is why, as the deleting client said (Modelreg-Reason).
	Reason string `json:"reason,omitempty"`
	// Manifest is the deleted manifest's bytes.
	Manifest []byte `json:"manifest"`
	// Takedown is true when an admin took the version down: its weights
	// were removed with it, and this record (with Manifest) is what says
	// what it was.
	Takedown bool `json:"takedown,omitempty"`
	// Record is the digest of the tombstone's own manifest (set when read).
	Record string `json:"record,omitempty"`
}

// ServerKey signs the records modelreg serve writes. Only records signed by
// it (or by a key the policy lists) count as a stage's history, so a client
// with push rights cannot forge one.
type ServerKey struct {
	priv ed25519.PrivateKey
}

// LoadOrCreateServerKey reads the server's private key from path (PKCS#8
// PEM), creating it (mode 0600, written atomically) when missing. It lives
// outside the index so that rebuilding the index keeps the trust anchor.
func LoadOrCreateServerKey(path string) (*ServerKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		der, gerr := x509.MarshalPKCS8PrivateKey(priv)
		if gerr != nil {
			return nil, gerr
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
		return &ServerKey{priv: priv}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("server key %s: %w", path, err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("server key %s is not PEM; move it away to have a new one made (records it signed then no longer verify)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("server key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("server key %s is not an ed25519 key", path)
	}
	return &ServerKey{priv: priv}, nil
}

// Public is the key that verifies the server's records.
func (k *ServerKey) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// PublicPEM is the public key as PEM, as published on the status endpoint.
func PublicPEM(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// ParsePublicPEM reads a server key published by PublicPEM.
func ParsePublicPEM(b []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM public key")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an ed25519 public key")
	}
	return pub, nil
}

// KeyID names a server key: sha256 of its PKIX encoding.
func KeyID(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type edKey struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func (k edKey) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(k.priv, data), nil
}
func (k edKey) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(k.pub, data, sig) {
		return errors.New("signature does not verify")
	}
	return nil
}
func (k edKey) KeyID() (string, error)   { return KeyID(k.pub), nil }
func (k edKey) Public() crypto.PublicKey { return k.pub }

// Seal signs payload as a DSSE envelope of payloadType.
func (k *ServerKey) Seal(payloadType string, payload []byte) ([]byte, error) {
	s, err := dsse.NewEnvelopeSigner(edKey{priv: k.priv, pub: k.Public()})
	if err != nil {
		return nil, err
	}
	env, err := s.SignPayload(context.Background(), payloadType, payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// ErrUnsigned means a record is not signed by the expected key: written by
// a client, before the chain existed, or forged.
var ErrUnsigned = errors.New("record not signed by the registry's key")

// Unseal reads a record layer: a DSSE envelope (checked against pub when
// pub is not nil) or, from a client or an older server, the bare JSON.
// signed reports whether the envelope verified against pub.
func Unseal(layerMediaType string, blob []byte, payloadType string, pub ed25519.PublicKey) (payload []byte, signed bool, err error) {
	if layerMediaType != mediatypes.DSSEEnvelope {
		return blob, false, nil
	}
	var env dsse.Envelope
	if err := json.Unmarshal(blob, &env); err != nil {
		return nil, false, fmt.Errorf("record envelope is not JSON: %w", err)
	}
	if env.PayloadType != payloadType {
		return nil, false, fmt.Errorf("record envelope holds %q, want %q", env.PayloadType, payloadType)
	}
	payload, err = env.DecodeB64Payload()
	if err != nil {
		return nil, false, fmt.Errorf("record envelope payload: %w", err)
	}
	if pub == nil {
		return payload, false, nil
	}
	v, err := dsse.NewEnvelopeVerifier(edKey{pub: pub})
	if err != nil {
		return nil, false, err
	}
	if _, err := v.Verify(context.Background(), &env); err != nil {
		return payload, false, nil
	}
	return payload, true, nil
}

// ReferrerManifest builds the manifest of a single-layer referrer of
// subject, so its digest is known before anything is written (the record
// is the commit point of a stage move).
func ReferrerManifest(subject ocispec.Descriptor, artifactType, layerType string, blob []byte, annotations map[string]string) (manifest []byte, layer ocispec.Descriptor, err error) {
	empty := ocispec.DescriptorEmptyJSON
	layer = ocispec.Descriptor{MediaType: layerType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	sub := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	manifest, err = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size},
		Layers: []ocispec.Descriptor{layer}, Subject: &sub, Annotations: annotations,
	})
	return manifest, layer, err
}
