// Package policy is the trust policy: per stage, which cosign keys may
// approve a version and how many distinct ones must have signed it. The
// same evaluation serves `modelreg verify`, `modelreg promote` and the
// server's gate, so they can never disagree.
package policy

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/evaluation"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.yaml.in/yaml/v3"
	"oras.land/oras-go/v2"
)

// DefaultPath is where the policy is looked for when --policy is not given.
const DefaultPath = ".modelreg/policy.yaml"

// Policy is a parsed trust policy file.
type Policy struct {
	// Source is the file it came from; Digest the sha256 of its bytes,
	// recorded in promotion records.
	Source string
	Digest string
	// Keys maps each key name to its public key.
	Keys map[string]key.Public
	// Revoked maps the name of each key the policy marks revoked to when
	// and why (docs/policy.md, "Revoking a key"). A revoked key stays in
	// Keys so its signatures are still found and shown, as revoked.
	Revoked map[string]Revocation
	// Stages maps each protected stage to its rule.
	Stages map[string]Stage
	// Registries maps a name to the key another modelreg serve signs its
	// promotion records with (published on its /v2/_modelreg/v1/status):
	// records copied from it are then shown as its trusted history, never
	// as this registry's (docs/promotion.md, "History at the source").
	Registries map[string]RegistryKey
}

// RegistryKey is the ed25519 key of a modelreg serve, and its fingerprint
// (sha256 of the PKIX encoding, the key id its records carry).
type RegistryKey struct {
	Key         ed25519.PublicKey
	Fingerprint string
}

// Stage is what a version needs to enter one stage.
type Stage struct {
	// Signatures requires signatures by Threshold distinct keys among Keys.
	Signatures *Signatures
	// Lineage requires a lineage record (Signed: an attestation a policy
	// key verified).
	Lineage *LineageRule
	// Evaluations are bounds some evaluation of the version must meet.
	Evaluations []Bound
}

// LineageRule requires lineage.
type LineageRule struct {
	Signed bool
}

// Bound is "metric op value", e.g. accuracy >= 0.9.
type Bound struct {
	Metric string
	Op     string
	Value  float64
}

func (b Bound) String() string {
	return fmt.Sprintf("%s %s %s", b.Metric, b.Op, strconv.FormatFloat(b.Value, 'g', -1, 64))
}

// holds reports whether v satisfies the bound.
func (b Bound) holds(v float64) bool {
	switch b.Op {
	case ">=":
		return v >= b.Value
	case ">":
		return v > b.Value
	case "<=":
		return v <= b.Value
	case "<":
		return v < b.Value
	case "=", "==":
		return v == b.Value
	}
	return false
}

// ParseBound reads "accuracy >= 0.9".
func ParseBound(s string) (Bound, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return Bound{}, fmt.Errorf("evaluation bound %q: expected METRIC OP NUMBER, e.g. \"accuracy >= 0.9\"", s)
	}
	v, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return Bound{}, fmt.Errorf("evaluation bound %q: %q is not a number", s, f[2])
	}
	switch f[1] {
	case ">=", ">", "<=", "<", "=", "==":
	default:
		return Bound{}, fmt.Errorf("evaluation bound %q: operator %q is not one of >= > <= < =", s, f[1])
	}
	return Bound{Metric: f[0], Op: f[1], Value: v}, nil
}

// Signatures is a threshold rule over named keys.
type Signatures struct {
	Keys      []string
	Threshold int
}

type rawPolicy struct {
	Version    int                  `yaml:"version"`
	Keys       map[string]yaml.Node `yaml:"keys"`
	Stages     map[string]rawStage  `yaml:"stages"`
	Registries map[string]yaml.Node `yaml:"registries"`
}

type rawStage struct {
	Signatures  *rawSignatures `yaml:"signatures"`
	Lineage     *rawLineage    `yaml:"lineage"`
	Evaluations []string       `yaml:"evaluations"`
	line        int
}

type rawLineage struct {
	Required bool `yaml:"required"`
	Signed   bool `yaml:"signed"`
}

func (s *rawStage) UnmarshalYAML(n *yaml.Node) error {
	if err := onlyFields(n, "signatures", "lineage", "evaluations"); err != nil {
		return err
	}
	type plain rawStage
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = rawStage(p)
	s.line = n.Line
	return nil
}

type rawSignatures struct {
	Keys      []string `yaml:"keys"`
	Threshold int      `yaml:"threshold"`
	line      int
}

func (s *rawSignatures) UnmarshalYAML(n *yaml.Node) error {
	if err := onlyFields(n, "keys", "threshold"); err != nil {
		return err
	}
	type plain rawSignatures
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = rawSignatures(p)
	s.line = n.Line
	return nil
}

// onlyFields rejects a mapping with keys other than allowed: yaml's
// KnownFields does not reach into custom unmarshalers, and a misspelt
// "treshold" must not silently become 0.
func onlyFields(n *yaml.Node, allowed ...string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: expected a mapping with %s", n.Line, strings.Join(allowed, ", "))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return fmt.Errorf("line %d: unknown field %q (expected %s)", k.Line, k.Value, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// Load reads a policy file; key paths in it are relative to the file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	p.Source = path
	return p, nil
}

// LoadDefault loads path, or DefaultPath when path is empty and that file
// exists; with neither it returns nil: every stage is unprotected.
func LoadDefault(path string) (*Policy, error) {
	if path != "" {
		return Load(path)
	}
	if _, err := os.Stat(DefaultPath); err == nil {
		return Load(DefaultPath)
	}
	return nil, nil
}

// Parse reads a policy document. dir resolves relative key paths.
func Parse(data []byte, dir string) (*Policy, error) {
	var raw rawPolicy
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not a valid policy: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if raw.Version != 1 {
		return nil, fmt.Errorf("line 1: version: 1 is required (found %d)", raw.Version)
	}
	sum := sha256.Sum256(data)
	p := &Policy{Digest: "sha256:" + hex.EncodeToString(sum[:]), Keys: map[string]key.Public{}, Stages: map[string]Stage{}, Registries: map[string]RegistryKey{}}
	for name, n := range raw.Registries {
		if n.Kind != yaml.ScalarNode || n.Value == "" {
			return nil, fmt.Errorf("line %d: registry %q: expected a path to the registry's public key (PEM, from its /v2/_modelreg/v1/status serverKey) or an inline PEM block", n.Line, name)
		}
		b := []byte(n.Value)
		if !strings.HasPrefix(strings.TrimSpace(n.Value), "-----BEGIN") {
			path := n.Value
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			var err error
			if b, err = os.ReadFile(path); err != nil {
				return nil, fmt.Errorf("line %d: registry %q: %w", n.Line, name, err)
			}
		}
		rk, err := parseRegistryKey(b)
		if err != nil {
			return nil, fmt.Errorf("line %d: registry %q: %w", n.Line, name, err)
		}
		p.Registries[name] = rk
	}
	p.Revoked = map[string]Revocation{}
	for name, n := range raw.Keys {
		value := n.Value
		if n.Kind == yaml.MappingNode {
			var (
				rev Revocation
				err error
			)
			if value, rev, err = parseKeyEntry(name, &n); err != nil {
				return nil, err
			}
			if !rev.Since.IsZero() {
				p.Revoked[name] = rev
			}
		} else if n.Kind != yaml.ScalarNode || n.Value == "" {
			return nil, fmt.Errorf("line %d: key %q: expected a path to a .pub file, an inline PEM block, or {path: FILE, revoked: TIME}", n.Line, name)
		}
		var (
			k   key.Public
			err error
		)
		if strings.HasPrefix(strings.TrimSpace(value), "-----BEGIN") {
			k, err = key.ParsePublic([]byte(value))
		} else {
			path := value
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			k, err = key.LoadPublic(path)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q: %w", n.Line, name, err)
		}
		p.Keys[name] = k
	}
	for name, s := range raw.Stages {
		if err := tag.ValidateStage(name); err != nil {
			return nil, fmt.Errorf("line %d: %w", s.line, err)
		}
		if s.Signatures == nil && s.Lineage == nil && len(s.Evaluations) == 0 {
			return nil, fmt.Errorf("line %d: stage %q has no requirement; add signatures: {keys: [...], threshold: N}, lineage: {required: true} or evaluations: [\"accuracy >= 0.9\"]", s.line, name)
		}
		var rule Stage
		if sig := s.Signatures; sig != nil {
			if len(sig.Keys) == 0 {
				return nil, fmt.Errorf("line %d: stage %q: signatures.keys is empty", sig.line, name)
			}
			for _, k := range sig.Keys {
				if _, ok := p.Keys[k]; !ok {
					return nil, fmt.Errorf("line %d: stage %q names key %q, which is not defined under keys:", sig.line, name, k)
				}
			}
			if sig.Threshold < 1 || sig.Threshold > len(sig.Keys) {
				return nil, fmt.Errorf("line %d: stage %q: threshold %d must be between 1 and the %d keys listed", sig.line, name, sig.Threshold, len(sig.Keys))
			}
			rule.Signatures = &Signatures{Keys: slices.Clone(sig.Keys), Threshold: sig.Threshold}
		}
		if l := s.Lineage; l != nil && (l.Required || l.Signed) {
			if l.Signed && len(p.Keys) == 0 {
				return nil, fmt.Errorf("line %d: stage %q requires signed lineage but the policy has no keys", s.line, name)
			}
			rule.Lineage = &LineageRule{Signed: l.Signed}
		}
		for _, e := range s.Evaluations {
			b, err := ParseBound(e)
			if err != nil {
				return nil, fmt.Errorf("line %d: stage %q: %w", s.line, name, err)
			}
			rule.Evaluations = append(rule.Evaluations, b)
		}
		p.Stages[name] = rule
	}
	return p, nil
}

// parseRegistryKey reads a modelreg serve's record key: an ed25519 public
// key in PEM, as its status endpoint publishes it.
func parseRegistryKey(b []byte) (RegistryKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return RegistryKey{}, errors.New("not a PEM public key (expected -----BEGIN PUBLIC KEY-----, the serverKey of the registry's /v2/_modelreg/v1/status)")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return RegistryKey{}, fmt.Errorf("parsing the registry key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return RegistryKey{}, fmt.Errorf("a registry key is the ed25519 key modelreg serve signs records with, not a %T (a cosign key belongs under keys:)", k)
	}
	fp, err := key.FingerprintOf(pub)
	if err != nil {
		return RegistryKey{}, err
	}
	return RegistryKey{Key: pub, Fingerprint: fp}, nil
}

// RegistryKeys lists the registry keys of the policy by name; a nil
// policy lists none.
func (p *Policy) RegistryKeys() map[string]RegistryKey {
	if p == nil {
		return nil
	}
	return p.Registries
}

// Stage returns a stage's rule and whether the policy protects it; a nil
// policy protects nothing.
func (p *Policy) Stage(name string) (Stage, bool) {
	if p == nil {
		return Stage{}, false
	}
	s, ok := p.Stages[name]
	return s, ok
}

// Trusted lists every key of the policy, for finding signatures before a
// stage is chosen.
func (p *Policy) Trusted() []key.Public {
	if p == nil {
		return nil
	}
	var out []key.Public
	for _, name := range slices.Sorted(maps.Keys(p.Keys)) {
		out = append(out, p.Keys[name])
	}
	return out
}

// Approver is a key that approved a version.
type Approver struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
}

// Decision is the outcome of a stage's policy for one version.
type Decision struct {
	Stage string `json:"stage"`
	// Protected is false when the policy does not name the stage.
	Protected bool `json:"protected"`
	Allowed   bool `json:"allowed"`
	// Required is the threshold; Approvers the distinct policy keys whose
	// valid signatures count toward it.
	Required  int        `json:"required"`
	Approvers []Approver `json:"approvers"`
	// Missing says, for people, what is lacking when Allowed is false.
	Missing []string `json:"missing,omitempty"`
	// Revoked lists the keys of the stage whose valid signatures were
	// found but did not count because the policy revokes them.
	Revoked []RevokedKey `json:"revoked,omitempty"`
}

// ErrDenied marks a refusal by the policy.
var ErrDenied = errors.New("policy not satisfied")

// Err returns nil when the decision allows the move, else an error naming
// everything that is missing.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return fmt.Errorf("%w for stage %q: %s", ErrDenied, d.Stage, strings.Join(d.Missing, "; "))
}

// Evidence is what is known about a version when a stage's rule is
// checked.
type Evidence struct {
	Signatures []signature.Found `json:"signatures"`
	// SignatureNote says how many signatures were beyond the cap
	// (signature.MaxSignatureReferrers) and not examined; "" when none.
	SignatureNote string              `json:"signatureNote,omitempty"`
	Lineage       []lineage.Source    `json:"lineage"`
	Evaluations   []evaluation.Record `json:"evaluations"`
}

// Gather reads the signatures, lineage and evaluations of subject, checked
// against the policy's keys. The subject's referrers are listed once
// (referrers.List) and the listing shared by the three readers, and the
// signatures examined are capped (signature.SearchFrom), so the time a
// gate holds a stage's lock does not grow with junk referrers.
func (p *Policy) Gather(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor) (Evidence, error) {
	var ev Evidence
	trusted := p.Trusted()
	l, err := referrers.List(ctx, target, subject, referrers.ListOptions{})
	if err != nil {
		return ev, err
	}
	found, err := signature.SearchFrom(ctx, l, trusted, signature.MaxSignatureReferrers)
	if err != nil {
		return ev, err
	}
	ev.Signatures, ev.SignatureNote = found.Found, found.Note()
	if ev.Lineage, err = lineage.GatherFrom(ctx, l, trusted); err != nil {
		return ev, err
	}
	if ev.Evaluations, err = evaluation.From(ctx, l); err != nil {
		return ev, err
	}
	if ev.Signatures == nil {
		ev.Signatures = []signature.Found{}
	}
	return ev, nil
}

// Evaluate decides whether a version with this evidence may enter stage
// now (EvaluateAt).
func (p *Policy) Evaluate(stage string, ev Evidence) Decision {
	return p.EvaluateAt(stage, ev, time.Now())
}

// EvaluateAt decides whether a version with this evidence may enter stage
// at time at: keys revoked by then count for nothing, whatever time their
// signatures claim.
func (p *Policy) EvaluateAt(stage string, ev Evidence, at time.Time) Decision {
	d := Decision{Stage: stage, Approvers: []Approver{}}
	var rule Stage
	if p != nil {
		rule, d.Protected = p.Stages[stage]
	}
	if !d.Protected {
		d.Allowed = true
		return d
	}
	if rule.Signatures != nil {
		missing := p.checkSignatures(stage, rule.Signatures, ev.Signatures, at, &d)
		if len(missing) > 0 && ev.SignatureNote != "" {
			missing = append(missing, ev.SignatureNote)
		}
		d.Missing = append(d.Missing, missing...)
	}
	if rule.Lineage != nil {
		d.Missing = append(d.Missing, checkLineage(rule.Lineage, p.discountRevoked(ev.Lineage, at))...)
	}
	for _, b := range rule.Evaluations {
		d.Missing = append(d.Missing, checkBound(b, ev.Evaluations)...)
	}
	d.Allowed = len(d.Missing) == 0
	return d
}

func checkLineage(rule *LineageRule, sources []lineage.Source) []string {
	var usable, unsigned, rejected []string
	for _, s := range sources {
		switch {
		case s.Kind == "record" && s.Problem == "":
			unsigned = append(unsigned, s.Where)
		case s.Kind == "attestation" && s.Signed:
			usable = append(usable, s.Where)
		case s.Problem != "":
			rejected = append(rejected, fmt.Sprintf("%s (%s)", s.Where, s.Problem))
		}
	}
	if !rule.Signed {
		usable = append(usable, unsigned...)
	}
	if len(usable) > 0 {
		return nil
	}
	var msg string
	switch {
	case rule.Signed && len(unsigned) > 0:
		msg = fmt.Sprintf("a signed lineage attestation is required, but the lineage is only unsigned records (%s); sign it with `modelreg lineage add --sign --key KEY` or `cosign attest`", strings.Join(unsigned, ", "))
	case rule.Signed:
		msg = "a signed lineage attestation is required and none was found (`modelreg lineage add --sign --key KEY`)"
	default:
		msg = "a lineage record is required and none was found (`modelreg push --dataset/--base-model/--code` or `modelreg lineage add`)"
	}
	if len(rejected) > 0 {
		msg += "; rejected: " + strings.Join(rejected, "; ")
	}
	return []string{msg}
}

func checkBound(b Bound, evals []evaluation.Record) []string {
	best, seen := 0.0, false
	var rejected []string
	for _, e := range evals {
		if e.Problem != "" {
			if _, ok := e.Metrics[b.Metric]; ok {
				rejected = append(rejected, fmt.Sprintf("evaluation %s was rejected: %s", e.Record, e.Problem))
			}
			continue
		}
		v, ok := e.Metrics[b.Metric]
		if !ok {
			continue
		}
		if b.holds(v) {
			return nil
		}
		if !seen || (strings.HasPrefix(b.Op, ">") && v > best) || (strings.HasPrefix(b.Op, "<") && v < best) {
			best = v
		}
		seen = true
	}
	var msg string
	if seen {
		msg = fmt.Sprintf("evaluation bound %s not met: the best evaluation measured %s = %s", b, b.Metric, strconv.FormatFloat(best, 'g', -1, 64))
	} else {
		msg = fmt.Sprintf("evaluation bound %s: no evaluation of this version measures %s (`modelreg eval add`)", b, b.Metric)
	}
	if len(rejected) > 0 {
		msg += "; " + strings.Join(rejected, "; ")
	}
	return []string{msg}
}

// checkSignatures applies a threshold rule; it fills d's approvers and
// returns what is missing.
func (p *Policy) checkSignatures(stage string, sig *Signatures, found []signature.Found, at time.Time, d *Decision) []string {
	d.Required = sig.Threshold
	byFP := map[string]string{}
	for _, name := range sig.Keys {
		byFP[p.Keys[name].Fingerprint] = name
	}
	seen := map[string]bool{}
	revoked := map[string]bool{}
	var problems []string
	for _, f := range found {
		name, ok := byFP[f.Key]
		rk, isRevoked := p.RevokedAt(f.Key, at)
		switch {
		case f.Valid && ok && isRevoked:
			if !revoked[f.Key] {
				revoked[f.Key] = true
				d.Revoked = append(d.Revoked, rk)
				problems = append(problems, fmt.Sprintf("a %s signature by %s does not count: %s", f.Form, name, rk.Explain()))
			}
		case f.Valid && ok && !seen[f.Key]:
			seen[f.Key] = true
			d.Approvers = append(d.Approvers, Approver{Name: name, Fingerprint: f.Key})
		case f.Valid && !ok:
			problems = append(problems, fmt.Sprintf("a %s signature by key %s, which may not approve %s", f.Form, f.Key, stage))
		case !f.Valid:
			problems = append(problems, fmt.Sprintf("a %s signature (%s) was rejected: %s", f.Form, f.Source, f.Problem))
		}
	}
	slices.SortFunc(d.Approvers, func(a, b Approver) int { return strings.Compare(a.Name, b.Name) })
	if len(d.Approvers) >= sig.Threshold {
		return nil
	}
	var have []string
	for _, a := range d.Approvers {
		have = append(have, a.Name)
	}
	var want, gone []string
	for _, k := range sig.Keys {
		if _, r := p.RevokedAt(p.Keys[k].Fingerprint, at); r {
			gone = append(gone, k)
		} else if !seen[p.Keys[k].Fingerprint] {
			want = append(want, k)
		}
	}
	msg := fmt.Sprintf("%d of %d required signatures from keys %s", len(d.Approvers), sig.Threshold, strings.Join(sig.Keys, ", "))
	if len(have) > 0 {
		msg += fmt.Sprintf(" (signed by %s)", strings.Join(have, ", "))
	}
	if len(gone) > 0 {
		msg += fmt.Sprintf(" (revoked: %s)", strings.Join(gone, ", "))
	}
	if need := sig.Threshold - len(d.Approvers); need > len(want) {
		msg += fmt.Sprintf("; %d more needed but only %d unrevoked key(s) remain (%s): the policy must name another key for stage %q", need, len(want), orNoKeys(want), stage)
	} else {
		msg += fmt.Sprintf("; %d more needed from %s", need, strings.Join(want, ", "))
	}
	if len(found) == 0 {
		msg += "; no signature of any form was found for this digest (sign it with `modelreg sign` or `cosign sign`)"
	}
	return append([]string{msg}, problems...)
}
