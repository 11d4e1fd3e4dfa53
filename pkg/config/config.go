// Package config is the `modelreg serve` configuration file: the settings
// that do not fit a flag (event subscriptions, retention rules, TLS
// files), in one YAML document an operator keeps beside the data. Flags set on the
// command line override the file, so a config can be shared by replicas
// and tuned per process.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/modelreg/modelreg/pkg/access"
	"go.yaml.in/yaml/v3"
)

// Config is one configuration file. Every section is optional; an empty
// file is a valid configuration that changes nothing.
type Config struct {
	// Serve mirrors the flags (addr, data, index, policy, accessFile,
	// htpasswd, tokenLifetime); flags set on the command line win.
	Serve `yaml:",inline"`
	// Events lists the subscriptions that receive CloudEvents for changes
	// in the registry (docs/events.md).
	Events Events `yaml:"events"`
	// TLS serves HTTPS with a certificate and key (docs/server.md, TLS).
	TLS TLS `yaml:"tls"`
	// Retention deletes old versions and collects unreferenced blobs
	// (docs/lifecycle.md).
	Retention Retention `yaml:"retention"`
	// AccessNode is the access: section as written (the access policy,
	// docs/access.md); Access is it parsed.
	AccessNode yaml.Node      `yaml:"access"`
	Access     *access.Policy `yaml:"-"`
	// Limits bound storage per repository, referrers and annotations.
	Limits Limits `yaml:"limits"`
	// OIDC signs people in with an OpenID Connect provider (nil: off).
	OIDC *OIDC `yaml:"oidc"`
	// Storage is distribution's storage section, passed through
	// (docs/deploy-scale.md); absent, storage is the filesystem under --data.
	Storage Storage `yaml:"storage"`
	// Middleware is distribution's middleware section (pull redirects).
	Middleware Middleware `yaml:"middleware"`
	// Replicas says several `modelreg serve` processes share this storage.
	Replicas bool `yaml:"replicas"`
	// UploadSecret is a file holding the upload-state secret replicas share.
	UploadSecret string `yaml:"uploadSecret"`
}

// Load reads and checks a configuration file. Unknown keys are errors, not
// warnings: a misspelt "subscriptions" would otherwise silently send no
// events.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration from its bytes (see Load).
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	if err := c.Serve.check(); err != nil {
		return nil, err
	}
	if err := c.Events.check(); err != nil {
		return nil, err
	}
	if err := c.TLS.check(); err != nil {
		return nil, err
	}
	if err := c.Retention.check(); err != nil {
		return nil, err
	}
	if !c.AccessNode.IsZero() {
		raw, err := yaml.Marshal(&c.AccessNode)
		if err != nil {
			return nil, err
		}
		if c.Access, err = access.Parse(raw, "the configuration's access section"); err != nil {
			return nil, err
		}
	}
	if err := c.Limits.check(); err != nil {
		return nil, err
	}
	if err := c.OIDC.check(); err != nil {
		return nil, err
	}
	if err := c.checkStorage(); err != nil {
		return nil, err
	}
	return &c, nil
}
