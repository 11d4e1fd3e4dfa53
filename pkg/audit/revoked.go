package audit

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/promotion"
)

// CheckRevoked flags, in the report, the stage heads that rest on a key
// pol revokes at time at: each stage's newest record (by sequence on
// modelreg serve, else by time) names the version the stage holds; it is
// flagged when the record's approving keys include a revoked one, or the
// version no longer meets the stage's rule without it. The version's
// evidence is what the report read (signatures, lineage, evaluations), so
// an auditor sees the same verdict as `modelreg keys revoked`.
func (r *Report) CheckRevoked(pol *policy.Policy, at time.Time) {
	if pol == nil {
		return
	}
	r.RevokedKeys = pol.RevokedKeys()
	r.StageHeads = []policy.Head{}
	byDigest := map[string]Version{}
	for _, v := range r.Versions {
		byDigest[v.Digest] = v
	}
	newest := map[string]promotion.Record{}
	for _, rec := range r.records {
		cur, ok := newest[rec.Stage]
		if !ok || newer(rec, cur) {
			newest[rec.Stage] = rec
		}
	}
	for _, stage := range slices.Sorted(maps.Keys(newest)) {
		rec := newest[stage]
		v, ok := byDigest[rec.Digest]
		if rec.Digest == "" || !ok {
			continue // the stage is empty, or holds a version outside the report
		}
		h := policy.Head{Repository: r.Repository, Stage: stage, Digest: rec.Digest, Record: rec.Record, RecordTime: rec.Time, RecordKeys: rec.Keys}
		ev := policy.Evidence{Signatures: v.Signatures, Lineage: v.Lineage, Evaluations: v.Evaluations}
		pol.CheckHead(&h, pol.EvaluateAt(stage, ev, at), at)
		r.StageHeads = append(r.StageHeads, h)
	}
}

// newer orders two records of a stage: the chain's sequence when both
// have one, else time.
func newer(a, b promotion.Record) bool {
	if a.Seq > 0 && b.Seq > 0 {
		return a.Seq > b.Seq
	}
	return a.Time.After(b.Time)
}

// Flagged lists the stage heads that rest on a revoked key.
func (r *Report) Flagged() []policy.Head {
	var out []policy.Head
	for _, h := range r.StageHeads {
		if h.Flagged {
			out = append(out, h)
		}
	}
	return out
}

func (r *Report) markdownRevoked(w io.Writer) {
	flagged := r.Flagged()
	if len(flagged) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Stage heads resting on a revoked key\n\n| stage | version | promoted | revoked keys | still meets the policy | why |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, h := range flagged {
		var keys []string
		for _, k := range h.RevokedKeys {
			keys = append(keys, fmt.Sprintf("%s (since %s)", k.Name, k.Since.Format(time.RFC3339)))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %v | %s |\n", h.Stage, short(h.Digest), h.RecordTime.Format(time.RFC3339), strings.Join(keys, ", "), h.Satisfied, strings.ReplaceAll(h.Why, "|", "\\|"))
	}
}
