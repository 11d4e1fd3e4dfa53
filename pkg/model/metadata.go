// Package model is the modelreg format: how a directory of model files plus
// its metadata becomes an OCI image manifest, and how any model manifest
// (modelreg's, a plain `oras push`, legacy ModelPack, KitOps, Docker model)
// is read back. It does no I/O on registries.
package model

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Metadata is what a training job knows about a version beyond its files.
// It lives in manifest annotations, so it is part of the version's digest.
type Metadata struct {
	Created     time.Time          `json:"created,omitzero"`
	Description string             `json:"description,omitempty"`
	Framework   string             `json:"framework,omitempty"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	Params      map[string]string  `json:"params,omitempty"`
	Labels      map[string]string  `json:"labels,omitempty"`
	Datasets    []string           `json:"datasets,omitempty"`
	// Extra holds every other annotation of the manifest, untouched.
	Extra map[string]string `json:"annotations,omitempty"`
}

// Annotations renders the metadata as manifest annotations.
func (m Metadata) Annotations() map[string]string {
	a := map[string]string{}
	maps.Copy(a, m.Extra)
	if !m.Created.IsZero() {
		a[mediatypes.AnnotationCreated] = m.Created.UTC().Format(time.RFC3339)
	}
	if m.Description != "" {
		a[mediatypes.AnnotationDescription] = m.Description
	}
	if m.Framework != "" {
		a[mediatypes.AnnotationFramework] = m.Framework
	}
	for k, v := range m.Metrics {
		a[mediatypes.AnnotationMetricPrefix+k] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	for k, v := range m.Params {
		a[mediatypes.AnnotationParamPrefix+k] = v
	}
	for k, v := range m.Labels {
		a[mediatypes.AnnotationLabelPrefix+k] = v
	}
	for i, d := range m.Datasets {
		a[mediatypes.AnnotationDatasetPrefix+strconv.Itoa(i)] = d
	}
	return a
}

// ParseAnnotations reads metadata from manifest annotations. Keys it does not
// know are kept in Extra; a metric that is not a number is an error, because
// a producer that wrote one would otherwise lose it silently.
func ParseAnnotations(a map[string]string) (Metadata, error) {
	var m Metadata
	datasets := map[int]string{}
	for k, v := range a {
		switch {
		case k == mediatypes.AnnotationCreated:
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return m, fmt.Errorf("annotation %s=%q is not an RFC 3339 time", k, v)
			}
			m.Created = t
		case k == mediatypes.AnnotationDescription:
			m.Description = v
		case k == mediatypes.AnnotationFramework:
			m.Framework = v
		case strings.HasPrefix(k, mediatypes.AnnotationMetricPrefix):
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return m, fmt.Errorf("annotation %s=%q: a metric must be a finite number", k, v)
			}
			setKey(&m.Metrics, strings.TrimPrefix(k, mediatypes.AnnotationMetricPrefix), f)
		case strings.HasPrefix(k, mediatypes.AnnotationParamPrefix):
			setKey(&m.Params, strings.TrimPrefix(k, mediatypes.AnnotationParamPrefix), v)
		case strings.HasPrefix(k, mediatypes.AnnotationLabelPrefix):
			setKey(&m.Labels, strings.TrimPrefix(k, mediatypes.AnnotationLabelPrefix), v)
		case strings.HasPrefix(k, mediatypes.AnnotationDatasetPrefix):
			i, err := strconv.Atoi(strings.TrimPrefix(k, mediatypes.AnnotationDatasetPrefix))
			if err != nil || i < 0 {
				setKey(&m.Extra, k, v)
				continue
			}
			datasets[i] = v
		default:
			setKey(&m.Extra, k, v)
		}
	}
	for _, i := range slices.Sorted(maps.Keys(datasets)) {
		m.Datasets = append(m.Datasets, datasets[i])
	}
	return m, nil
}

func setKey[V any](m *map[string]V, k string, v V) {
	if *m == nil {
		*m = map[string]V{}
	}
	(*m)[k] = v
}

// ParseKeyValues parses repeated KEY=VALUE flags. what names the flag in the
// error ("--param").
func ParseKeyValues(what string, kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: expected KEY=VALUE, e.g. %s lr=0.001", what, kv, what)
		}
		if !validKey(k) {
			return nil, fmt.Errorf("%s %q: key %q may hold only letters, digits, '.', '_' and '-'", what, kv, k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s %q: key %q given twice", what, kv, k)
		}
		out[k] = v
	}
	return out, nil
}

// ParseMetrics parses repeated KEY=NUMBER values; what names them in errors
// (the CLI passes its flag, "--metric").
func ParseMetrics(what string, kvs []string) (map[string]float64, error) {
	raw, err := ParseKeyValues(what, kvs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(raw))
	for k, v := range raw {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%s %s=%s: a metric must be a finite number (not NaN or Inf), e.g. %s accuracy=0.93", what, k, v, what)
		}
		out[k] = f
	}
	return out, nil
}

func validKey(k string) bool {
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return k != ""
}

// Diff lists, for people, how a version to be pushed (its metadata and
// layers) differs from an existing one: files added, removed or changed,
// and each metadata field that differs. It explains an immutability
// refusal.
func Diff(old *Version, meta Metadata, layers []ocispec.Descriptor) []string {
	var out []string
	oldFiles := map[string]string{}
	for _, f := range old.Files {
		oldFiles[f.Path] = f.Descriptor.Digest.String()
	}
	newFiles := map[string]string{}
	for _, l := range layers {
		p := l.Annotations[mediatypes.AnnotationFilepath]
		newFiles[p] = l.Digest.String()
	}
	var added, removed, changed []string
	for p, d := range newFiles {
		switch od, ok := oldFiles[p]; {
		case !ok:
			added = append(added, p)
		case od != d:
			changed = append(changed, p)
		}
	}
	for p := range oldFiles {
		if _, ok := newFiles[p]; !ok {
			removed = append(removed, p)
		}
	}
	for _, c := range []struct {
		what  string
		paths []string
	}{{"files changed", changed}, {"files added", added}, {"files removed", removed}} {
		if len(c.paths) > 0 {
			slices.Sort(c.paths)
			out = append(out, c.what+": "+strings.Join(c.paths, ", "))
		}
	}
	o, n := old.Metadata.Annotations(), meta.Annotations()
	keys := map[string]bool{}
	for k := range o {
		keys[k] = true
	}
	for k := range n {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if o[k] != n[k] {
			out = append(out, fmt.Sprintf("%s %q (existing) vs %q (this push)", k, o[k], n[k]))
		}
	}
	return out
}
