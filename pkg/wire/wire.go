// Package wire holds the types of modelreg serve's model API
// (/v2/_modelreg/v1/, docs/api.md): what the server encodes and its client
// decodes. Sharing them keeps the two in step, and keeps the client free of
// the server's index (and of SQLite).
package wire

import (
	"github.com/modelreg/modelreg/pkg/weights"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/modelreg/modelreg/pkg/promotion"
)

// Prefix is the model API's root path.
const Prefix = "/v2/_modelreg/v1/"

// VersionRow is one model version as the model API returns it.
type VersionRow struct {
	Repository  string             `json:"repository"`
	Digest      string             `json:"digest"`
	Versions    []string           `json:"versions"`
	Stages      []string           `json:"stages"`
	Created     string             `json:"created,omitempty"`
	Framework   string             `json:"framework,omitempty"`
	Description string             `json:"description,omitempty"`
	Size        int64              `json:"size"`
	Files       int                `json:"files"`
	Metrics     map[string]float64 `json:"metrics"`
	Params      map[string]string  `json:"params"`
	Labels      map[string]string  `json:"labels"`
	// Weights is what the headers of the version's weights files say, once
	// the server has read them (weights.NAME in queries).
	Weights *weights.Facts `json:"weights,omitempty"`
}

// ModelRow summarizes one model repository.
type ModelRow struct {
	Repository string            `json:"repository"`
	Versions   int               `json:"versions"`
	Stages     map[string]string `json:"stages"`
	Latest     string            `json:"latest,omitempty"`
	// LatestVersion is the newest version's tag; LastMove the time of the
	// last recorded stage move ("" when none).
	LatestVersion string `json:"latestVersion,omitempty"`
	LastMove      string `json:"lastMove,omitempty"`
}

// Edge is one lineage edge: version Repo@Digest was made from an input.
type Edge struct {
	Repo        string `json:"repository"`
	Digest      string `json:"digest"`
	Kind        string `json:"kind"`
	URI         string `json:"uri"`
	InputDigest string `json:"inputDigest,omitempty"`
	Revision    string `json:"revision,omitempty"`
}

// Models is GET models.
type Models struct {
	Models []ModelRow `json:"models"`
}

// Versions is GET models/REPO/versions and GET search.
type Versions struct {
	Repository string       `json:"repository,omitempty"`
	Versions   []VersionRow `json:"versions"`
}

// Version is GET models/REPO/versions/REF: the version and how many
// referrers of each kind it has.
type Version struct {
	Version   VersionRow     `json:"version"`
	Referrers map[string]int `json:"referrers"`
}

// History is GET models/REPO/stages/STAGE/history: the stage's signed
// records, newest first.
type History struct {
	Stage   string             `json:"stage"`
	Records []promotion.Record `json:"records"`
}

// CopiedHistory is GET models/REPO/stages/STAGE/copied: the records of the
// stage that are not this registry's history (copied from another
// registry, or pushed by a client), one history per origin, each trusted
// only when a key the server's policy lists under registries: signed it.
type CopiedHistory struct {
	Stage   string             `json:"stage"`
	Sources []promotion.Copied `json:"sources"`
}

// HistoryAt is the same with ?at=TIME: the record in force then (nil when
// the stage held nothing).
type HistoryAt struct {
	Stage  string            `json:"stage"`
	At     time.Time         `json:"at"`
	Record *promotion.Record `json:"record"`
}

// Referrer is one referrer with its kind: signature, attestation,
// promotion, lineage, evaluation, tombstone or other.
type Referrer struct {
	Kind       string             `json:"kind"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
}

// Referrers is GET models/REPO/referrers/DIGEST.
type Referrers struct {
	Subject   digest.Digest `json:"subject"`
	Referrers []Referrer    `json:"referrers"`
}

// Lineage is GET models/REPO/versions/REF/lineage.
type Lineage struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	Inputs     []Edge        `json:"inputs"`
}

// Descendants is GET lineage/descendants?of=X.
type Descendants struct {
	Of          string `json:"of"`
	Descendants []Edge `json:"descendants"`
}

// Status is GET status: the key that signs the server's records (so anyone
// can verify a history), the policy in force and its health, and the
// index's health.
type Status struct {
	ServerKey   string `json:"serverKey"`
	ServerKeyID string `json:"serverKeyId"`
	Policy      any    `json:"policy"`
	// ProtectedStages lists the stages the policy in force protects.
	ProtectedStages []string `json:"protectedStages"`
	// IndexFailures lists the manifests the index could not take.
	IndexFailures []string `json:"indexFailures"`
	// PendingRepositories have writes the index has not caught up with.
	PendingRepositories []string `json:"pendingRepositories"`
	// Access is the access policy in force (path, digest, and the error of
	// a new file that did not parse); absent without one.
	Access map[string]string `json:"access,omitempty"`
}

// Error codes the model API adds to the distribution spec's.
const (
	// CodeQueryInvalid is a search query or order that does not parse;
	// the error's detail holds its Position.
	CodeQueryInvalid = "QUERY_INVALID"
)

// QueryDetail is the detail of a QUERY_INVALID error.
type QueryDetail struct {
	// Position is the byte offset in the query where the problem is.
	Position int `json:"position"`
}

// ImageView is the image view modelreg serve serves for a version: in the
// repository <model>/image, pinned by Digest (docs/format.md, "Image view").
type ImageView struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Version    string `json:"version"`
	// Base is a modelcar's base image (REPO@sha256:…, of this registry).
	Base string `json:"base,omitempty"`
}

// GCRequest is the body of POST gc: apply the retention rules, then
// collect the blobs nothing refers to.
type GCRequest struct {
	// DryRun changes nothing and reports what would go.
	DryRun bool `json:"dryRun"`
	// Repositories, a pattern (team/* one segment, team/** any depth),
	// limits which repositories' versions may be deleted; blobs are
	// collected registry-wide, as they are shared.
	Repositories string `json:"repositories,omitempty"`
}

// GCVersion is a version retention deleted, or would delete.
type GCVersion struct {
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	Tags       []string `json:"tags"`
	// Reason is the rule that let it go, as the tombstone records it.
	Reason string `json:"reason"`
	// Error is why the deletion failed (the version was promoted
	// meanwhile, say); it is then still there.
	Error string `json:"error,omitempty"`
}

// GCReport is the answer of POST gc.
type GCReport struct {
	DryRun       bool   `json:"dryRun"`
	Repositories string `json:"repositories,omitempty"`
	// Versions are the versions deleted (in a dry run: that would be).
	Versions []GCVersion `json:"versions"`
	// Kept counts the versions the rules keep.
	Kept int `json:"kept"`
	// Manifests counts the manifests the collector read to mark.
	Manifests int `json:"manifests"`
	// Blobs and Bytes are what the collection reclaimed (would reclaim).
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// YoungBlobs and YoungBytes are unreferenced blobs spared because
	// they were written or named less than Grace ago (a push in flight);
	// a later collection takes them if nothing names them by then.
	YoungBlobs int       `json:"youngBlobs"`
	YoungBytes int64     `json:"youngBytes"`
	Grace      string    `json:"grace"`
	Started    time.Time `json:"started"`
	Seconds    float64   `json:"seconds"`
}

// TakedownRequest is the body of POST models/REPO/versions/REF/takedown.
type TakedownRequest struct {
	// Reason is required: the tombstone is the only trace left of what ran.
	Reason string `json:"reason"`
}

// Takedown is the answer of a takedown: the tombstone written and the
// weights removed.
type Takedown struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	// Blobs and Bytes are the version's blobs removed.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// Shared are blobs of the version that another manifest still names
	// (or a push named meanwhile): kept. Take those versions down too if
	// their content must go.
	Shared []string `json:"shared"`
}
