package server

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The upload secret is made once, kept 0600, and read back on the next
// start, so upload URLs issued before a restart stay valid after it.
func TestHTTPSecretPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "modelreg", "http-secret")
	first, err := httpSecret(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %o, want 0600", info.Mode().Perm())
	}
	again, err := httpSecret(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 32 || !bytes.Equal(first, again) {
		t.Errorf("secret not kept across starts: %x then %x", first, again)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left beside the secret: %v", entries)
	}
}

// A damaged secret file is an error naming the file, never silently replaced.
func TestHTTPSecretDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "http-secret")
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := httpSecret(path, rand.Reader); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("damaged secret: err %v, want one naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "not hex\n" {
		t.Errorf("damaged secret file was rewritten: %q", b)
	}
}

// The server keeps the secret under its data directory.
func TestServerKeepsSecretWithData(t *testing.T) {
	data := t.TempDir()
	for range 2 {
		s, err := New(t.Context(), Options{Addr: "127.0.0.1:0", DataDir: data, Bare: true})
		if err != nil {
			t.Fatal(err)
		}
		s.ln.Close()
	}
	b, err := os.ReadFile(filepath.Join(data, "modelreg", "http-secret"))
	if err != nil || len(strings.TrimSpace(string(b))) != 64 {
		t.Fatalf("secret file: %q, %v", b, err)
	}
}
