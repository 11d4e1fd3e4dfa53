package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
)

// Storage is distribution's own storage section (its configuration
// reference, "storage"), passed through unchanged: one driver (filesystem,
// s3, gcs, azure, inmemory) with its parameters, and distribution's
// cache, delete, redirect, maintenance and tag settings. Absent, blobs
// and manifests stay on the local filesystem under --data. Decoding uses
// distribution's own code, so a section that works for distribution's
// registry works here, and one it refuses is refused here.
type Storage configuration.Storage

// Middleware is distribution's middleware section, passed through: the
// storage middleware that sends pulls elsewhere (redirect, cloudfront,
// rewrite), by injection point ("storage"), each with its options.
type Middleware map[string][]configuration.Middleware

// UnmarshalYAML decodes the section with distribution's decoder, which
// refuses two drivers in one section.
func (s *Storage) UnmarshalYAML(unmarshal func(any) error) error {
	var ds configuration.Storage
	if err := ds.UnmarshalYAML(unmarshal); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	*s = Storage(ds)
	return nil
}

// Driver is the storage driver the section names ("s3", "filesystem"),
// or "" when the section names none (the default filesystem under
// --data).
func (s Storage) Driver() string {
	for k := range s {
		if !slices.Contains(storageSettings, k) {
			return k
		}
	}
	return ""
}

// storageSettings are the keys of the storage section that are not drivers.
var storageSettings = []string{"maintenance", "cache", "delete", "redirect", "tag"}

// Shared reports whether other processes may write the storage this
// configuration names: replicas: true, which the operator sets when
// several `modelreg serve` share one storage (and one index). Settings
// that are only safe for a single writer are refused then.
func (c *Config) Shared() bool { return c.Replicas }

// checkStorage refuses what would silently go wrong: two drivers (also
// refused by the decoder), a process-local blob descriptor cache with
// replicas, replicas without a shared upload secret, and middleware at
// injection points modelreg serve does not apply.
func (c *Config) checkStorage() error {
	var drivers []string
	for k := range c.Storage {
		if !slices.Contains(storageSettings, k) {
			drivers = append(drivers, k)
		}
	}
	if len(drivers) > 1 {
		slices.Sort(drivers)
		return fmt.Errorf("storage: names %s; give exactly one storage driver", strings.Join(drivers, " and "))
	}
	if c.Storage != nil && len(drivers) == 0 {
		return fmt.Errorf("storage: names no driver; add one (filesystem, s3, gcs, azure) with its parameters, or remove the section to store under --data")
	}
	if c.Replicas {
		// An in-memory cache remembers that a blob exists after another
		// replica's collector deleted it: this replica would then answer
		// HEAD with 200, the client would skip the upload, and a manifest
		// would name a blob that is gone.
		if cache, ok := c.Storage["cache"]; ok && fmt.Sprint(cache["blobdescriptor"]) == "inmemory" {
			return fmt.Errorf("storage.cache.blobdescriptor: inmemory is per process and goes stale when other replicas delete blobs (replicas: true); remove it (no cache) or use redis")
		}
		if c.Storage.Driver() == "" || c.Storage.Driver() == "inmemory" {
			return fmt.Errorf("replicas: true needs a storage every replica reaches (s3, gcs, azure, or a shared filesystem named in storage:); the default is this machine's --data")
		}
		if c.UploadSecret == "" {
			return fmt.Errorf("replicas: true needs uploadSecret: a file every replica reads (hex, at least 32 bytes: `openssl rand -hex 32`), else a blob upload continued on another replica fails")
		}
	}
	for point := range c.Middleware {
		if point != "storage" {
			return fmt.Errorf("middleware.%s: modelreg serve applies storage middleware only (redirect, cloudfront, rewrite); remove %s", point, point)
		}
	}
	for i, m := range c.Middleware["storage"] {
		if m.Name == "" {
			return fmt.Errorf("middleware.storage[%d]: name is required (redirect, cloudfront or rewrite)", i)
		}
	}
	return nil
}
