// Package key reads and writes cosign key pairs: ECDSA P-256 keys in
// cosign's encrypted PEM format (scrypt + secretbox over PKCS#8), the format
// `cosign generate-key-pair` writes, so a key works with modelreg and the
// cosign CLI alike.
package key

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
)

// PEM block types cosign uses for private keys; the first is what current
// cosign writes, the second what older versions wrote.
const (
	pemSigstorePrivate = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemCosignPrivate   = "ENCRYPTED COSIGN PRIVATE KEY"
	pemPublic          = "PUBLIC KEY"
)

// Public is a verification key with the fingerprint people and records use
// to name it.
type Public struct {
	Key *ecdsa.PublicKey
	// Fingerprint is "sha256:" and the hex SHA-256 of the key's PKIX DER
	// encoding: the same bytes cosign's bundles hint at.
	Fingerprint string
}

// Private is a signing key.
type Private struct {
	Key *ecdsa.PrivateKey
	Public
}

// FingerprintOf computes the fingerprint of a public key.
func FingerprintOf(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// FingerprintFromHint turns a sigstore bundle's publicKey.hint (base64 of
// the SHA-256 of the key's DER) into a fingerprint.
func FingerprintFromHint(hint string) (string, bool) {
	b, err := base64.StdEncoding.DecodeString(hint)
	if err != nil || len(b) != sha256.Size {
		return "", false
	}
	return "sha256:" + hex.EncodeToString(b), true
}

// Hint is the bundle publicKey.hint of this key.
func (p Public) Hint() string {
	b, _ := hex.DecodeString(strings.TrimPrefix(p.Fingerprint, "sha256:"))
	return base64.StdEncoding.EncodeToString(b)
}

// ParsePublic reads a PEM public key, as `cosign generate-key-pair` writes it.
func ParsePublic(pemBytes []byte) (Public, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Public{}, errors.New("not a PEM public key (expected -----BEGIN PUBLIC KEY-----)")
	}
	if block.Type != pemPublic {
		return Public{}, fmt.Errorf("PEM block is %q, expected %q: give the .pub file, not the private key", block.Type, pemPublic)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return Public{}, fmt.Errorf("parsing public key: %w", err)
	}
	return newPublic(pub)
}

func newPublic(pub crypto.PublicKey) (Public, error) {
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return Public{}, fmt.Errorf("unsupported key type %T: modelreg signs and verifies with ECDSA P-256 keys, cosign generate-key-pair's default", pub)
	}
	fp, err := FingerprintOf(ec)
	if err != nil {
		return Public{}, err
	}
	return Public{Key: ec, Fingerprint: fp}, nil
}

// LoadPublic reads a public key file.
func LoadPublic(path string) (Public, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Public{}, err
	}
	p, err := ParsePublic(b)
	if err != nil {
		return Public{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// LoadPrivate reads and decrypts a cosign private key file.
func LoadPrivate(path string, password []byte) (Private, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Private{}, err
	}
	p, err := ParsePrivate(b, password)
	if err != nil {
		return Private{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePrivate decrypts a cosign private key.
func ParsePrivate(pemBytes, password []byte) (Private, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Private{}, errors.New("not a PEM private key")
	}
	if block.Type != pemSigstorePrivate && block.Type != pemCosignPrivate {
		return Private{}, fmt.Errorf("PEM block is %q, expected %q (a cosign key)", block.Type, pemSigstorePrivate)
	}
	der, err := encrypted.Decrypt(block.Bytes, password)
	if err != nil {
		return Private{}, fmt.Errorf("cannot decrypt the key: wrong password? (set COSIGN_PASSWORD): %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return Private{}, fmt.Errorf("parsing private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return Private{}, fmt.Errorf("unsupported key type %T: modelreg signs with ECDSA P-256 keys", k)
	}
	pub, err := newPublic(&ec.PublicKey)
	if err != nil {
		return Private{}, err
	}
	return Private{Key: ec, Public: pub}, nil
}

// Generate makes a new key pair and returns the encrypted private key PEM
// and the public key PEM, in cosign's format.
func Generate(password []byte) (privatePEM, publicPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemSigstorePrivate, Bytes: enc}),
		pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: pubDER}), nil
}

// Sign signs the SHA-256 of msg (ASN.1 DER signature), as cosign does.
func (p Private) Sign(msg []byte) ([]byte, error) {
	sum := sha256.Sum256(msg)
	return ecdsa.SignASN1(rand.Reader, p.Key, sum[:])
}

// Verify checks an ECDSA signature over the SHA-256 of msg.
func (p Public) Verify(msg, sig []byte) bool {
	sum := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(p.Key, sum[:], sig)
}
