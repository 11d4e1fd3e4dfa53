// Package evaluation records metrics measured after training (on a holdout
// set, in a shadow deployment) as a referrer of the version, next to the
// metrics the training job pushed.
package evaluation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/referrers"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
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
func Write(ctx context.Context, target content.Pusher, subject ocispec.Descriptor, r Record) (ocispec.Descriptor, error) {
	r.Subject = subject.Digest.String()
	r.Record, r.Problem = "", ""
	blob, err := json.Marshal(r)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return referrers.Push(ctx, target, subject, mediatypes.ArtifactTypeEvaluation, mediatypes.ArtifactTypeEvaluation, blob,
		map[string]string{mediatypes.AnnotationCreated: r.Time.UTC().Format(time.RFC3339Nano)})
}

// Of lists the evaluations attached to subject, oldest first. Records that
// name another digest are returned with their Problem set; malformed ones
// are left out. It lists only evaluation referrers; From reads a listing
// already made.
func Of(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor) ([]Record, error) {
	l, err := referrers.List(ctx, target, subject, referrers.ListOptions{ArtifactType: mediatypes.ArtifactTypeEvaluation})
	if err != nil {
		return nil, err
	}
	return From(ctx, l)
}

// From reads the evaluations of a listing of the subject's referrers,
// oldest first.
func From(ctx context.Context, l *referrers.Listing) ([]Record, error) {
	out := []Record{}
	for _, it := range l.Of(referrers.KindEvaluation) {
		blob, err := it.Blob(ctx)
		if errors.Is(err, referrers.ErrMalformed) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(blob, &r); err != nil {
			r.Problem = "not valid JSON"
		}
		r.Record = it.Descriptor.Digest.String()
		if r.Problem == "" && r.Subject != l.Subject.Digest.String() {
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
