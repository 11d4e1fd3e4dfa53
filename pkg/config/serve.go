package config

import (
	"fmt"
	"time"
)

// Serve holds the settings that mirror `modelreg serve`'s flags, so one
// file can describe a replica: a flag set on the command line overrides
// its field, a flag left at its default does not.
type Serve struct {
	// Addr is --addr; Data --data.
	Addr string `yaml:"addr"`
	Data string `yaml:"data"`
	// Index is --index: sqlite:PATH (the default, under the data
	// directory) or a postgres:// URL.
	Index string `yaml:"index"`
	// Policy is --policy (the trust policy); AccessFile --access.
	Policy     string `yaml:"policy"`
	AccessFile string `yaml:"accessFile"`
	// Htpasswd is --htpasswd.
	Htpasswd string `yaml:"htpasswd"`
	// TokenLifetime is --token-lifetime.
	TokenLifetime time.Duration `yaml:"tokenLifetime"`
}

func (s Serve) check() error {
	if s.TokenLifetime < 0 {
		return fmt.Errorf("tokenLifetime must be a positive duration")
	}
	return nil
}
