package lineage

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/signature"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
)

// Source is one statement of a version's lineage: an unsigned record, or
// a signed attestation (modelreg's lineage predicate, or an SLSA provenance
// v1 whose resolved dependencies become inputs).
type Source struct {
	// Kind is "record" or "attestation".
	Kind          string `json:"kind"`
	Form          string `json:"form,omitempty"`
	PredicateType string `json:"predicateType"`
	Where         string `json:"where"`
	// Signed is true when a trusted key verified the attestation.
	Signed    bool      `json:"signed"`
	Key       string    `json:"key,omitempty"`
	Problem   string    `json:"problem,omitempty"`
	Predicate Predicate `json:"predicate"`
}

// Gather reads every lineage statement about subject. Attestations are
// checked against trusted; one no trusted key verifies is returned with
// Signed false and its Problem, and its inputs are still shown. It lists
// subject's referrers; GatherFrom reads a listing already made.
func Gather(ctx context.Context, target oras.ReadOnlyTarget, subject ocispec.Descriptor, trusted []key.Public) ([]Source, error) {
	l, err := referrers.List(ctx, target, subject, referrers.ListOptions{})
	if err != nil {
		return nil, err
	}
	return GatherFrom(ctx, l, trusted)
}

// GatherFrom is Gather over a listing of the subject's referrers: its
// lineage records, and the lineage and SLSA provenance attestations
// (signature.AttestationsFrom).
func GatherFrom(ctx context.Context, l *referrers.Listing, trusted []key.Public) ([]Source, error) {
	out := []Source{}
	for _, it := range l.Of(referrers.KindLineage) {
		s := Source{Kind: "record", PredicateType: mediatypes.PredicateLineage, Where: it.Descriptor.Digest.String()}
		blob, err := it.Blob(ctx)
		if errors.Is(err, referrers.ErrMalformed) {
			s.Problem = "malformed lineage record"
			out = append(out, s)
			continue
		}
		if err != nil {
			return nil, err
		}
		st, err := Parse(blob, l.Subject.Digest)
		if err != nil {
			s.Problem = err.Error()
		}
		s.Predicate = st.Predicate
		out = append(out, s)
	}
	atts, err := signature.AttestationsFrom(ctx, l, trusted, mediatypes.PredicateLineage, mediatypes.PredicateSLSAProvenanceV1)
	if err != nil {
		return nil, err
	}
	for _, a := range atts {
		s := Source{Kind: "attestation", Form: string(a.Form), PredicateType: a.PredicateType, Where: a.Source, Signed: a.Valid, Key: a.Key, Problem: a.Problem}
		if len(a.Statement) > 0 {
			if a.PredicateType == mediatypes.PredicateSLSAProvenanceV1 {
				s.Predicate = FromSLSA(a.Statement)
			} else {
				var st Statement
				json.Unmarshal(a.Statement, &st)
				s.Predicate = st.Predicate
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// FromSLSA reads an SLSA provenance v1 statement as lineage: each resolved
// dependency becomes an input (code for git URIs, a model for OCI
// references, a dataset otherwise), the invocation id the run.
func FromSLSA(statement []byte) Predicate {
	var st struct {
		Predicate struct {
			BuildDefinition struct {
				ResolvedDependencies []struct {
					URI    string            `json:"uri"`
					Name   string            `json:"name"`
					Digest map[string]string `json:"digest"`
				} `json:"resolvedDependencies"`
				ExternalParameters map[string]any `json:"externalParameters"`
			} `json:"buildDefinition"`
			RunDetails struct {
				Builder struct {
					ID string `json:"id"`
				} `json:"builder"`
				Metadata struct {
					InvocationID  string `json:"invocationId"`
					InvocationID2 string `json:"invocationID"`
				} `json:"metadata"`
			} `json:"runDetails"`
		} `json:"predicate"`
	}
	json.Unmarshal(statement, &st)
	p := Predicate{Inputs: []Input{}}
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		uri := d.URI
		if uri == "" {
			uri = d.Name
		}
		in := Input{URI: uri, Digest: map[string]string{}}
		for alg, v := range d.Digest {
			if alg == "gitCommit" || alg == "sha1" {
				in.Revision = v
			} else {
				in.Digest[alg] = v
			}
		}
		switch {
		case strings.HasPrefix(uri, "git+") || in.Revision != "":
			in.Kind, in.URI = KindCode, strings.TrimPrefix(uri, "git+")
		case looksLikeOCI(uri):
			in.Kind, in.URI = KindModel, strings.TrimPrefix(uri, "oci://")
		default:
			in.Kind = KindDataset
		}
		if len(in.Digest) == 0 {
			in.Digest = nil
		}
		p.Inputs = append(p.Inputs, in)
	}
	run := st.Predicate.RunDetails.Metadata.InvocationID
	if run == "" {
		run = st.Predicate.RunDetails.Metadata.InvocationID2
	}
	if run != "" || st.Predicate.RunDetails.Builder.ID != "" {
		p.Run = &Run{ID: run, URL: st.Predicate.RunDetails.Builder.ID}
	}
	return p
}

// looksLikeOCI reports whether a URI names an OCI artifact by digest.
func looksLikeOCI(uri string) bool {
	u := strings.TrimPrefix(uri, "oci://")
	if strings.Contains(u, "://") {
		return false
	}
	_, err := remote.ParseReference(u)
	return err == nil && strings.Contains(u, "@sha256:")
}
