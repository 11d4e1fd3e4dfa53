// Package lineage records what a model version was made from (datasets, a
// base model, code, the training run) as an in-toto Statement attached to
// the version as a referrer, so the record travels with the model and can
// be added after the push without changing the version's digest.
package lineage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
)

// Input kinds.
const (
	KindDataset = "dataset"
	KindModel   = "model"
	KindCode    = "code"
)

// Input is one thing the version was made from.
type Input struct {
	Kind string `json:"kind"`
	// URI locates it: a dataset URI, an OCI reference REGISTRY/REPO@DIGEST
	// for a model, a code repository URL.
	URI string `json:"uri"`
	// Digest identifies its exact content where one exists
	// ({"sha256": "<hex>"}, as in-toto writes digests).
	Digest map[string]string `json:"digest,omitempty"`
	// Revision is the code commit.
	Revision string `json:"revision,omitempty"`
}

// Predicate is the lineage predicate (PredicateLineage).
type Predicate struct {
	Inputs []Input `json:"inputs"`
	Run    *Run    `json:"run,omitempty"`
	// Parameters is free-form.
	Parameters map[string]string `json:"parameters,omitempty"`
}

// Run names the training run.
type Run struct {
	ID  string `json:"id,omitempty"`
	URL string `json:"url,omitempty"`
}

// Statement is the in-toto Statement v1 a lineage record carries.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject is the version the statement is about.
type Subject struct {
	Name   string            `json:"name,omitempty"`
	Digest map[string]string `json:"digest"`
}

// ParseDataset reads URI[@sha256:HEX].
func ParseDataset(s string) (Input, error) {
	in := Input{Kind: KindDataset, URI: s}
	if i := strings.LastIndex(s, "@sha256:"); i > 0 {
		d, err := digest.Parse(s[i+1:])
		if err != nil {
			return in, fmt.Errorf("dataset %q: %v", s, err)
		}
		in.URI, in.Digest = s[:i], map[string]string{"sha256": d.Encoded()}
	}
	if in.URI == "" {
		return in, fmt.Errorf("dataset %q: expected URI[@sha256:HEX]", s)
	}
	return in, nil
}

// ParseCode reads REPO@COMMIT.
func ParseCode(s string) (Input, error) {
	i := strings.LastIndex(s, "@")
	if i <= 0 || i == len(s)-1 {
		return Input{}, fmt.Errorf("code %q: expected REPOSITORY@COMMIT, e.g. https://github.com/acme/train@4f2a9c1", s)
	}
	return Input{Kind: KindCode, URI: s[:i], Revision: s[i+1:]}, nil
}

// ModelInput names a base model by its resolved reference.
func ModelInput(registryRepo string, d digest.Digest) Input {
	return Input{Kind: KindModel, URI: registryRepo + "@" + d.String(), Digest: map[string]string{d.Algorithm().String(): d.Encoded()}}
}

// New builds the statement about subject (repository name for the record).
func New(name string, subject digest.Digest, p Predicate) Statement {
	if p.Inputs == nil {
		p.Inputs = []Input{}
	}
	return Statement{
		Type:          mediatypes.InTotoStatementV1,
		Subject:       []Subject{{Name: name, Digest: map[string]string{subject.Algorithm().String(): subject.Encoded()}}},
		PredicateType: mediatypes.PredicateLineage,
		Predicate:     p,
	}
}

// Write attaches the statement to the version as an unsigned lineage record.
func Write(ctx context.Context, repo registry.Repository, subject ocispec.Descriptor, st Statement) (ocispec.Descriptor, error) {
	blob, err := json.Marshal(st)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return signature.PushReferrer(ctx, repo, subject, mediatypes.ArtifactTypeLineage, mediatypes.InTotoPayloadType, blob, nil)
}

// Parse reads a lineage statement and checks it is about subject.
func Parse(blob []byte, subject digest.Digest) (Statement, error) {
	var st Statement
	if err := json.Unmarshal(blob, &st); err != nil {
		return st, fmt.Errorf("lineage record is not JSON: %w", err)
	}
	if st.PredicateType != mediatypes.PredicateLineage {
		return st, fmt.Errorf("predicate %q is not %s", st.PredicateType, mediatypes.PredicateLineage)
	}
	for _, s := range st.Subject {
		if s.Digest[subject.Algorithm().String()] == subject.Encoded() {
			return st, nil
		}
	}
	return st, errors.New("the lineage record is about another digest")
}
