package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// certificate keeps the server's TLS certificate in force and renews it
// without a restart: every handshake looks at the two files (two stat
// calls, nothing beside the cost of a handshake) and re-reads them when
// either changed (size, modification time, or identity: cert-manager and
// Kubernetes secrets replace files by rename); Reload (SIGHUP) re-reads
// them whatever their stamps. A new pair that does not load (the
// certificate replaced but not yet its key, a typo) keeps the old one in
// force and is logged at ERROR once per distinct state of the files.
type certificate struct {
	certFile, keyFile string
	log               *slog.Logger

	mu        sync.Mutex
	cur       *tls.Certificate
	certStat  os.FileInfo
	keyStat   os.FileInfo
	failedFor string // the stamps of the files whose last load failed
}

// newCertificate loads the pair; a pair that does not load stops the
// server at start-up, naming the file at fault.
func newCertificate(certFile, keyFile string, log *slog.Logger) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads both files and puts their pair in force.
func (c *certificate) load() error {
	cs, err1 := os.Stat(c.certFile)
	ks, err2 := os.Stat(c.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("TLS: %w; name an existing certificate and key (PEM)", err)
	}
	pair, err := loadPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cur, c.certStat, c.keyStat, c.failedFor = pair, cs, ks, ""
	return nil
}

// loadPair reads a certificate and its key, with errors that say which
// of the two is wrong and how to make a valid pair.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		switch msg := err.Error(); {
		case strings.Contains(msg, "does not match public key"):
			return nil, fmt.Errorf("TLS: the key %s is not the key of the certificate %s; give the key the certificate was issued for", keyFile, certFile)
		case strings.Contains(msg, "in certificate input"):
			return nil, fmt.Errorf("TLS certificate %s: no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----): %v; were the certificate and key swapped?", certFile, err)
		case strings.Contains(msg, "key input"), strings.Contains(msg, "rather than a key"), strings.Contains(msg, "private key"):
			return nil, fmt.Errorf("TLS key %s: no usable PEM private key in the file (expected -----BEGIN … PRIVATE KEY-----): %v; were the certificate and key swapped?", keyFile, err)
		}
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", certFile, err)
		}
	}
	return &pair, nil
}

// get is tls.Config.GetCertificate: the pair in force, re-read first when
// the files changed.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cs, err1 := os.Stat(c.certFile)
	ks, err2 := os.Stat(c.keyFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err1 != nil || err2 != nil || sameFile(cs, c.certStat) && sameFile(ks, c.keyStat) {
		// A file being replaced (briefly absent) keeps the pair in force.
		return c.cur, nil
	}
	stamp := stampOf(cs, ks)
	if stamp == c.failedFor {
		return c.cur, nil
	}
	c.reloadLocked("the certificate files changed", stamp)
	return c.cur, nil
}

// Reload re-reads the files now (SIGHUP); a pair that does not load keeps
// the one in force and is returned.
func (c *certificate) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs, err1 := os.Stat(c.certFile)
	ks, err2 := os.Stat(c.keyFile)
	stamp := ""
	if err1 == nil && err2 == nil {
		stamp = stampOf(cs, ks)
	}
	return c.reloadLocked("reload asked", stamp)
}

// stampOf names a state of the two files, so a pair that failed to load
// is not read (and logged) again until one of them changes.
func stampOf(cert, key os.FileInfo) string {
	return fmt.Sprint(cert.Size(), cert.ModTime().UnixNano(), key.Size(), key.ModTime().UnixNano())
}

func (c *certificate) reloadLocked(why, stamp string) error {
	old := c.cur
	if err := c.load(); err != nil {
		c.failedFor = stamp
		c.log.Error("TLS: the new certificate was not taken; the one in force stays", "why", why, "err", err,
			"serial", old.Leaf.SerialNumber.String(), "expires", old.Leaf.NotAfter.Format(time.RFC3339))
		return err
	}
	c.log.Info("TLS certificate loaded", "why", why, "subject", c.cur.Leaf.Subject.String(),
		"serial", c.cur.Leaf.SerialNumber.String(), "expires", c.cur.Leaf.NotAfter.Format(time.RFC3339))
	return nil
}

// sameFile reports whether a file is still the one loaded: the same
// identity, size and modification time.
func sameFile(now, loaded os.FileInfo) bool {
	return loaded != nil && os.SameFile(now, loaded) && now.Size() == loaded.Size() && now.ModTime().Equal(loaded.ModTime())
}

// tlsConfig is the server's TLS configuration: TLS 1.2 at least (1.0 and
// 1.1 are deprecated, RFC 8996), Go's default cipher suites, and the
// certificate from c, re-read as it changes. HTTP/2 is offered by
// http.Server itself (it adds "h2" to NextProtos), as nothing sets
// TLSNextProto.
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}
