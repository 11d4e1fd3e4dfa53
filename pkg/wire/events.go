package wire

import (
	"encoding/json"
	"time"
)

// EventData is the data of every CloudEvent modelreg serve emits
// (docs/events.md): one shape for all types, so a receiver decodes one
// struct and reads the fields its type sets.
type EventData struct {
	Repository string `json:"repository"`
	// Digest is the version's digest (version.pushed, version.deleted,
	// stage.moved: the version the stage points at now, "" when emptied;
	// promotion.refused: the version refused), or the referrer manifest's
	// (*.attached).
	Digest string `json:"digest,omitempty"`
	// Tag is the version tag pushed; Tags the version tags a deletion retired.
	Tag  string   `json:"tag,omitempty"`
	Tags []string `json:"tags,omitempty"`
	// Subject is the version a referrer (*.attached) is about.
	Subject      string `json:"subject,omitempty"`
	ArtifactType string `json:"artifactType,omitempty"`
	MediaType    string `json:"mediaType,omitempty"`
	Size         int64  `json:"size,omitempty"`
	// Stage, Kind (promotion, rollback or removal) and Previous (the
	// digest the stage held before) describe a stage move or a refusal.
	Stage    string `json:"stage,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Previous string `json:"previous,omitempty"`
	Actor    string `json:"actor,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Record is the digest of the record that commits the change (the
	// promotion record, the tombstone): the audit trail to follow.
	Record string `json:"record,omitempty"`
	// Seq is the record's place in its stage's history.
	Seq int64 `json:"seq,omitempty"`
	// Keys and Policy are the signing keys that satisfied the trust policy
	// and the policy's sha256, on a promotion.
	Keys   []string `json:"keys,omitempty"`
	Policy string   `json:"policy,omitempty"`
}

// Event is one event of the outbox as the model API lists it.
type Event struct {
	// Seq orders events on this registry; ID is the CloudEvents id
	// (unique, for de-duplication by receivers).
	Seq        int64           `json:"seq"`
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Repository string          `json:"repository"`
	Subject    string          `json:"subject"`
	Time       time.Time       `json:"time"`
	Data       json.RawMessage `json:"data"`
	// Deliveries are the event's deliveries, one per subscription that
	// wanted it.
	Deliveries []Delivery `json:"deliveries"`
}

// Delivery is one event's delivery to one subscription.
type Delivery struct {
	ID           int64  `json:"id"`
	Subscription string `json:"subscription"`
	Event        int64  `json:"event"`
	// Repository is the event's.
	Repository string `json:"repository"`
	// State is pending (waiting for its next attempt), delivered, or dead
	// (every attempt failed; kept, not retried unless asked).
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	// LastStatus is the receiver's HTTP status of the last attempt (0: no
	// answer); LastError what went wrong.
	LastStatus int       `json:"lastStatus,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	Updated    time.Time `json:"updated"`
}

// Events is a page of the event log.
type Events struct {
	Events []Event `json:"events"`
	// Next is the seq to pass as ?after= (or, newest first, ?before=)
	// for the next page; 0 at the end.
	Next int64 `json:"next,omitempty"`
}

// Deliveries is a page of the delivery log.
type Deliveries struct {
	Deliveries []Delivery `json:"deliveries"`
}

// The CloudEvents types modelreg serve emits (docs/events.md).
const (
	EventVersionPushed       = "dev.modelreg.version.pushed"
	EventSignatureAttached   = "dev.modelreg.signature.attached"
	EventAttestationAttached = "dev.modelreg.attestation.attached"
	EventEvaluationAttached  = "dev.modelreg.evaluation.attached"
	EventLineageAttached     = "dev.modelreg.lineage.attached"
	EventStageMoved          = "dev.modelreg.stage.moved"
	EventPromotionRefused    = "dev.modelreg.promotion.refused"
	EventVersionDeleted      = "dev.modelreg.version.deleted"
)

// EventTypes lists every type above, in the order docs/events.md gives them.
var EventTypes = []string{EventVersionPushed, EventSignatureAttached, EventAttestationAttached, EventEvaluationAttached,
	EventLineageAttached, EventStageMoved, EventPromotionRefused, EventVersionDeleted}
