package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// uploadSecret returns the upload-state secret: the one in file, which
// the operator made and gives every replica, else the one kept with the
// data (made on first start by httpSecret).
func uploadSecret(data, file string) ([]byte, error) {
	if file == "" {
		return httpSecret(filepath.Join(data, "modelreg", "http-secret"), rand.Reader)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("upload secret: %w; write one with `openssl rand -hex 32 > %s` and give the same file to every replica", err, file)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < 32 {
		return nil, fmt.Errorf("upload secret %s does not hold at least 32 hex-encoded bytes; write one with `openssl rand -hex 32`", file)
	}
	return secret, nil
}

// httpSecret returns the key distribution signs upload state with (the
// _state token in an upload's Location), kept in the file at path so that
// an upload started before a restart can be continued after it. A missing
// file is created (mode 0600) from 32 bytes of entropy, atomically: written
// to a temporary file, then linked into place, so two servers starting on
// the same data directory agree on one secret. The secret is never logged.
func httpSecret(path string, entropy io.Reader) ([]byte, error) {
	if secret, err := readSecret(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return secret, err
	}
	secret := make([]byte, 32)
	if _, err := io.ReadFull(entropy, secret); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".http-secret-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 already; say so for readers.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.WriteString(hex.EncodeToString(secret) + "\n"); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	// Link, unlike rename, never replaces a secret another process
	// created meanwhile; the file system may not do links, then rename.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return readSecret(path)
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return nil, err
		}
	}
	return secret, nil
}

// readSecret reads a secret file written by httpSecret: at least 32 bytes,
// hex-encoded.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < 32 {
		return nil, fmt.Errorf("%s does not hold a secret of at least 32 hex-encoded bytes; delete it to have a new one made (uploads in progress will then start over)", path)
	}
	return secret, nil
}
