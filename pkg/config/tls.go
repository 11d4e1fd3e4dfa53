package config

import "errors"

// TLS makes `modelreg serve` speak HTTPS (and HTTP/2) instead of plain
// HTTP. Both files are PEM; they are re-read when either changes and on
// SIGHUP, so a certificate can be renewed (cert-manager, certbot) without
// a restart. The --tls-cert and --tls-key flags override both fields.
type TLS struct {
	// Cert is the server's certificate chain: its own certificate first,
	// then the intermediates clients need to reach their trusted root.
	Cert string `yaml:"cert"`
	// Key is the private key of the certificate (PKCS #1, PKCS #8 or EC).
	Key string `yaml:"key"`
}

// Enabled reports whether the section asks for TLS.
func (t TLS) Enabled() bool { return t.Cert != "" || t.Key != "" }

// check refuses half a pair: a certificate without its key (or a key
// without its certificate) would otherwise start a plain HTTP server the
// operator believes is encrypted.
func (t TLS) check() error {
	if (t.Cert == "") != (t.Key == "") {
		return errors.New("tls: give both cert and key (PEM files), or neither for plain HTTP")
	}
	return nil
}
