// Package evaluation records metrics measured after training (on a holdout
// set, in a shadow deployment) as a referrer of the version, next to the
// metrics the training job pushed.
package evaluation

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/signature"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
)

// Record is one evaluation.
type Record struct {
	// Subject is the digest evaluated; a record attached to another
	// version than the one it names is ignored.
	Subject string             `json:"subject"`
	Metrics map[string]float64 `json:"metrics"`
	// Dataset is the evaluation data, URI[@sha256:HEX].
	Dataset string    `json:"dataset,omitempty"`
	Actor   string    `json:"actor,omitempty"`
	Time    time.Time `json:"time"`
	// Record is the digest of the record's manifest (set when read).
	Record string `json:"record,omitempty"`
	// Problem says why the record does not count (set when read).
	Problem string `json:"problem,omitempty"`
}

// ReadFile reads metrics from a JSON file: {"accuracy": 0.93, ...}, or an
// object with a "metrics" member of that form.
func ReadFile(path string) (map[string]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var wrapped struct {
		Metrics map[string]float64 `json:"metrics"`
	}
	if json.Unmarshal(b, &wrapped) == nil && len(wrapped.Metrics) > 0 {
		return wrapped.Metrics, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object of metrics: %w", path, err)
	}
	out := map[string]float64{}
	for k, v := range raw {
		switch n := v.(type) {
		case float64:
			out[k] = n
		case string:
			f, err := strconv.ParseFloat(n, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: metric %q is %q, not a number", path, k, n)
			}
			out[k] = f
		default:
			return nil, fmt.Errorf("%s: metric %q is not a number", path, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no metrics", path)
	}
	return out, nil
}

// Write attaches an evaluation to the version subject.
func Write(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, r Record) (ocispec.Descriptor, error) {
	r.Subject = subject.Digest.String()
	r.Record, r.Problem = "", ""
	blob, err := json.Marshal(r)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return signature.PushReferrer(ctx, repo, subject, mediatypes.ArtifactTypeEvaluation, mediatypes.ArtifactTypeEvaluation, blob,
		map[string]string{mediatypes.AnnotationCreated: r.Time.UTC().Format(time.RFC3339Nano)})
}

// Of lists the evaluations attached to subject, oldest first. Records that
// name another digest are returned with their Problem set.
func Of(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor) ([]Record, error) {
	refs, err := signature.ReadReferrers(ctx, repo, subject, mediatypes.ArtifactTypeEvaluation)
	if err != nil {
		return nil, err
	}
	out := []Record{}
	for _, ref := range refs {
		if ref.Malformed {
			continue
		}
		var r Record
		if err := json.Unmarshal(ref.Blob, &r); err != nil {
			r.Problem = "not valid JSON"
		}
		r.Record = ref.Descriptor.Digest.String()
		if r.Problem == "" && r.Subject != subject.Digest.String() {
			r.Problem = fmt.Sprintf("the record evaluates %s, not this version", orNone(r.Subject))
		}
		out = append(out, r)
	}
	sortByTime(out)
	return out, nil
}

func sortByTime(rs []Record) {
	slices.SortStableFunc(rs, func(a, b Record) int { return a.Time.Compare(b.Time) })
}

func orNone(s string) string {
	if s == "" {
		return "no digest"
	}
	return s
}
