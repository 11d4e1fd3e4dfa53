package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/lineage"
	"go.yaml.in/yaml/v3"
)

// Revocation marks a key of the policy revoked from Since on. From that
// time its signatures count for nothing, whatever time they claim to have
// been made: whoever holds a compromised key can sign with any date, so a
// signature's own time cannot tell an approval made before the compromise
// from a forgery made after it.
type Revocation struct {
	Since  time.Time
	Reason string
}

// RevokedKey names a revoked key, for messages, verify and the listing of
// stage heads that rest on it.
type RevokedKey struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Since       time.Time `json:"revoked"`
	Reason      string    `json:"reason,omitempty"`
}

// Explain says, for people, why the key's signatures do not count and
// what to do.
func (r RevokedKey) Explain() string {
	s := fmt.Sprintf("key %s (%s) is revoked by the policy since %s", r.Name, r.Fingerprint, r.Since.UTC().Format(time.RFC3339))
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s + "; a revoked key's signatures never count, whatever time they claim (a compromised key can sign with any date): have another key of the stage sign"
}

// parseKeyEntry reads the long form of a key, {path: FILE | pem: PEM,
// revoked: TIME, reason: TEXT}; it returns the path or PEM and the
// revocation (zero when the key is not revoked).
func parseKeyEntry(name string, n *yaml.Node) (string, Revocation, error) {
	var rev Revocation
	if err := onlyFields(n, "path", "pem", "revoked", "reason"); err != nil {
		return "", rev, fmt.Errorf("key %q: %w", name, err)
	}
	var value string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return "", rev, fmt.Errorf("line %d: key %q: %s must be a single value", v.Line, name, k.Value)
		}
		switch k.Value {
		case "path", "pem":
			if value != "" {
				return "", rev, fmt.Errorf("line %d: key %q: give path or pem, not both", k.Line, name)
			}
			value = v.Value
		case "revoked":
			t, err := time.Parse(time.RFC3339, v.Value)
			if err != nil {
				return "", rev, fmt.Errorf("line %d: key %q: revoked: %q is not an RFC 3339 time; write it as 2026-11-01T00:00:00Z", v.Line, name, v.Value)
			}
			rev.Since = t.UTC()
		case "reason":
			rev.Reason = v.Value
		}
	}
	if value == "" {
		return "", rev, fmt.Errorf("line %d: key %q: path (a .pub file) or pem (the key inline) is required", n.Line, name)
	}
	return value, rev, nil
}

// RevokedAt reports whether the policy key with this fingerprint is
// revoked at time at (a revocation dated later is not yet in force).
func (p *Policy) RevokedAt(fingerprint string, at time.Time) (RevokedKey, bool) {
	if p == nil || fingerprint == "" {
		return RevokedKey{}, false
	}
	for name, r := range p.Revoked {
		k, ok := p.Keys[name]
		if ok && k.Fingerprint == fingerprint && !at.Before(r.Since) {
			return RevokedKey{Name: name, Fingerprint: fingerprint, Since: r.Since, Reason: r.Reason}, true
		}
	}
	return RevokedKey{}, false
}

// discountRevoked marks lineage attestations signed by a key revoked at
// at as rejected, so signed lineage by a revoked key does not satisfy a
// stage either.
func (p *Policy) discountRevoked(sources []lineage.Source, at time.Time) []lineage.Source {
	out := slices.Clone(sources)
	for i, s := range out {
		if rk, ok := p.RevokedAt(s.Key, at); ok && s.Signed {
			out[i].Signed = false
			out[i].Problem = rk.Explain()
		}
	}
	return out
}

func orNoKeys(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// Head is one stage head checked against the revocations of the policy:
// the version a stage holds, the record of the move that put it there,
// and whether that move rests on a key revoked since. The caller fills
// the first fields from the stage's history; CheckHead the rest.
type Head struct {
	Repository string    `json:"repository"`
	Stage      string    `json:"stage"`
	Digest     string    `json:"digest"`
	Record     string    `json:"record,omitempty"`
	RecordTime time.Time `json:"recordTime"`
	// RecordKeys are the fingerprints the record says approved the move.
	RecordKeys []string `json:"recordKeys"`
	// RevokedKeys are those of RecordKeys the policy now revokes, and the
	// keys whose signatures on the version no longer count.
	RevokedKeys []RevokedKey `json:"revokedKeys"`
	// Satisfied is whether the version meets the stage's rule today,
	// revoked keys not counting (true for an unprotected stage).
	Satisfied bool     `json:"satisfied"`
	Missing   []string `json:"missing,omitempty"`
	// Flagged is set when the head rests on a revoked key: its record
	// names one, or the version no longer meets the rule without it.
	Flagged bool   `json:"flagged"`
	Why     string `json:"why,omitempty"`
}

// CheckHead completes h with d, the stage's decision for the head's
// version made at time at (EvaluateAt).
func (p *Policy) CheckHead(h *Head, d Decision, at time.Time) {
	h.RevokedKeys = []RevokedKey{}
	if h.RecordKeys == nil {
		h.RecordKeys = []string{}
	}
	seen := map[string]bool{}
	var inRecord []string
	for _, fp := range h.RecordKeys {
		if rk, ok := p.RevokedAt(fp, at); ok && !seen[fp] {
			seen[fp] = true
			h.RevokedKeys = append(h.RevokedKeys, rk)
			inRecord = append(inRecord, rk.Name)
		}
	}
	for _, rk := range d.Revoked {
		if !seen[rk.Fingerprint] {
			seen[rk.Fingerprint] = true
			h.RevokedKeys = append(h.RevokedKeys, rk)
		}
	}
	h.Satisfied, h.Missing = d.Allowed, d.Missing
	switch {
	case len(inRecord) > 0 && !d.Allowed:
		h.Flagged = true
		h.Why = fmt.Sprintf("its promotion was approved by %s, revoked since; without it the version no longer meets the policy of %q: %s", strings.Join(inRecord, ", "), h.Stage, strings.Join(d.Missing, "; "))
	case len(inRecord) > 0:
		h.Flagged = true
		h.Why = fmt.Sprintf("its promotion was approved by %s, revoked since; the version still meets the policy of %q without it (%s)", strings.Join(inRecord, ", "), h.Stage, approverNames(d))
	case !d.Allowed && len(d.Revoked) > 0:
		h.Flagged = true
		var names []string
		for _, rk := range d.Revoked {
			names = append(names, rk.Name)
		}
		h.Why = fmt.Sprintf("it is signed by %s, revoked since, and no longer meets the policy of %q without it: %s", strings.Join(names, ", "), h.Stage, strings.Join(d.Missing, "; "))
	}
}

func approverNames(d Decision) string {
	var names []string
	for _, a := range d.Approvers {
		names = append(names, a.Name)
	}
	if len(names) == 0 {
		return "no signature needed"
	}
	return "signed by " + strings.Join(names, ", ")
}

// RevokedKeys lists every revocation of the policy, in force or dated
// later, by key name.
func (p *Policy) RevokedKeys() []RevokedKey {
	out := []RevokedKey{}
	if p == nil {
		return out
	}
	for _, name := range slices.Sorted(maps.Keys(p.Revoked)) {
		r := p.Revoked[name]
		out = append(out, RevokedKey{Name: name, Fingerprint: p.Keys[name].Fingerprint, Since: r.Since, Reason: r.Reason})
	}
	return out
}
