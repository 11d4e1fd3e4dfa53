package key

import (
	"strings"
	"testing"
)

func TestGenerateLoadSignVerify(t *testing.T) {
	privPEM, pubPEM, err := Generate([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(privPEM), "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----") {
		t.Errorf("private key PEM: %.60s", privPEM)
	}
	priv, err := ParsePrivate(privPEM, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublic(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if pub.Fingerprint != priv.Fingerprint || !strings.HasPrefix(pub.Fingerprint, "sha256:") || len(pub.Fingerprint) != 71 {
		t.Errorf("fingerprints %s / %s", pub.Fingerprint, priv.Fingerprint)
	}
	if fp, ok := FingerprintFromHint(pub.Hint()); !ok || fp != pub.Fingerprint {
		t.Errorf("hint round trip: %s %v", fp, ok)
	}
	sig, err := priv.Sign([]byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Verify([]byte("payload"), sig) {
		t.Error("own signature does not verify")
	}
	if pub.Verify([]byte("payload!"), sig) {
		t.Error("signature verifies over altered payload")
	}
	if _, err := ParsePrivate(privPEM, []byte("wrong")); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := ParsePublic(privPEM); err == nil || !strings.Contains(err.Error(), "give the .pub file") {
		t.Errorf("private key as public: %v", err)
	}
	if _, err := ParsePublic([]byte("hello")); err == nil {
		t.Error("garbage accepted as a public key")
	}
}
