package index

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/referrers"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The event outbox (outbox_events, outbox_cursors, outbox_deliveries;
// migrations/) is state storage cannot give again (which events were
// emitted, which were delivered), so its tables are not in tables: a
// schema change or a rebuild of the index never drops them. Events are
// inserted in the transaction that commits the change they describe, so
// none is lost when the server dies after a commit and none is emitted for
// a change that did not commit. On PostgreSQL those transactions hold the
// outbox lock (lockOutbox) from their first event to their commit, so
// events commit in seq order and Fanout, reading "seq > cursor", never
// passes one that commits later.

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryDead      = "dead"
)

type actorKey struct{}

// WithActor names who makes the writes done with ctx, for the events
// they emit (the index cannot tell a user from a request).
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorOf returns the actor WithActor put in ctx, or "".
func ActorOf(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// Emit adds an event that no index change carries (a refused promotion).
func (x *Index) Emit(ctx context.Context, typ, repo, subject string, data wire.EventData) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := emit(ctx, tx, typ, repo, subject, data); err != nil {
		return err
	}
	return tx.Commit()
}

func emit(ctx context.Context, db wtx, typ, repo, subject string, data wire.EventData) error {
	if err := db.lock(ctx, lockOutbox); err != nil {
		return err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	data.Repository = repo
	if data.Actor == "" {
		data.Actor = ActorOf(ctx)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `INSERT INTO outbox_events (id, type, repo, subject, time, data) VALUES (?, ?, ?, ?, ?, ?)`,
		hex.EncodeToString(id), typ, repo, subject, time.Now().UnixNano(), string(b))
	return err
}

// attachedType is the event a new referrer emits, "" for none (records
// of stage moves and deletions have events of their own).
func attachedType(m Manifest) string {
	switch referrers.Classify(ocispec.Descriptor{ArtifactType: m.ArtifactType, Annotations: m.Annotations}) {
	case referrers.KindSignature, referrers.KindBundle:
		return wire.EventSignatureAttached
	case referrers.KindAttestation:
		return wire.EventAttestationAttached
	case referrers.KindEvaluation:
		return wire.EventEvaluationAttached
	case referrers.KindLineage:
		return wire.EventLineageAttached
	}
	return ""
}

// emitManifest emits what a manifest new to the index announces: a
// referrer attached to a version.
func emitManifest(ctx context.Context, db wtx, m Manifest) error {
	if m.Subject == "" {
		return nil
	}
	typ := attachedType(m)
	if typ == "" {
		return nil
	}
	return emit(ctx, db, typ, m.Repo, m.Repo+"@"+m.Subject.String(), wire.EventData{
		Digest: m.Digest.String(), Subject: m.Subject.String(), ArtifactType: m.ArtifactType, MediaType: m.MediaType, Size: m.Size})
}

// emitTag emits what a tag newly pointing at m announces: a version
// pushed, or a signature or attestation in cosign's legacy tag form
// (sha256-<hex>.sig, .att).
func emitTag(ctx context.Context, db wtx, m Manifest, t string) error {
	if tag.Classify(t) == tag.Version && m.Kind == model.KindModel {
		return emit(ctx, db, wire.EventVersionPushed, m.Repo, m.Repo+":"+t, wire.EventData{
			Digest: m.Digest.String(), Tag: t, ArtifactType: m.ArtifactType, MediaType: m.MediaType, Size: m.Size})
	}
	rest, ok := strings.CutPrefix(t, "sha256-")
	if !ok {
		return nil
	}
	typ := ""
	switch {
	case strings.HasSuffix(rest, ".sig"):
		typ, rest = wire.EventSignatureAttached, strings.TrimSuffix(rest, ".sig")
	case strings.HasSuffix(rest, ".att"):
		typ, rest = wire.EventAttestationAttached, strings.TrimSuffix(rest, ".att")
	default:
		return nil
	}
	subject := digest.Digest("sha256:" + rest)
	if subject.Validate() != nil {
		return nil
	}
	return emit(ctx, db, typ, m.Repo, m.Repo+"@"+subject.String(), wire.EventData{
		Digest: m.Digest.String(), Subject: subject.String(), Tag: t, ArtifactType: m.ArtifactType, MediaType: m.MediaType, Size: m.Size})
}

// emitMove emits a stage move from its trusted record's body; anchors
// (which move nothing) emit none.
func emitMove(ctx context.Context, db wtx, repo string, recordDigest digest.Digest, body []byte) error {
	var r promotion.Record
	if err := json.Unmarshal(body, &r); err != nil {
		return err
	}
	kind := r.Kind
	switch {
	case kind == promotion.KindAnchor:
		return nil
	case kind == "" && r.Rollback:
		kind = promotion.KindRollback
	case kind == "":
		kind = promotion.KindPromotion
	}
	return emit(ctx, db, wire.EventStageMoved, repo, repo+":"+r.Stage, wire.EventData{
		Digest: r.Digest, Stage: r.Stage, Kind: kind, Previous: r.Previous, Actor: r.Actor, Reason: r.Reason,
		Record: recordDigest.String(), Seq: r.Seq, Keys: r.Keys, Policy: r.Policy})
}

// emitDeletion emits a version deleted, from the retirements of its
// tombstone.
func emitDeletion(ctx context.Context, db wtx, repo string, t Tombstone) error {
	return emit(ctx, db, wire.EventVersionDeleted, repo, repo+"@"+t.Digest, wire.EventData{
		Digest: t.Digest, Tags: t.Tags, Actor: t.Actor, Reason: t.Reason, Record: t.Record})
}

// Tombstone is what a deletion's event says: the version, its retired
// tags, who and why, and the tombstone record.
type Tombstone struct {
	Digest, Actor, Reason, Record string
	Tags                          []string
}

// PutTombstone indexes a tombstone record the server wrote (manifest m)
// and retires the version tags it names, emitting the deletion, in one
// transaction.
func (x *Index) PutTombstone(ctx context.Context, m Manifest, t Tombstone) error {
	return x.putNew(ctx, m, func(tx wtx, existed bool) error {
		var rs []Retirement
		for _, tg := range t.Tags {
			rs = append(rs, Retirement{Tag: tg, Digest: t.Digest, Tombstone: m.Digest.String()})
		}
		if err := retire(ctx, tx, m.Repo, rs); err != nil {
			return err
		}
		if !existed {
			t.Record = m.Digest.String()
			if err := emitDeletion(ctx, tx, m.Repo, t); err != nil {
				return err
			}
		}
		return nil
	})
}

func hasManifest(ctx context.Context, tx wtx, repo string, d digest.Digest) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM manifests WHERE repo = ? AND digest = ?`, repo, d.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func tagOf(ctx context.Context, tx wtx, repo, t string) (digest.Digest, error) {
	var d string
	err := tx.QueryRowContext(ctx, `SELECT digest FROM tags WHERE repo = ? AND tag = ?`, repo, t).Scan(&d)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return digest.Digest(d), err
}

// before is what the index held of a repository before a repair replaced
// it: what the repair adds is what a crash kept from being announced.
type before struct {
	manifests map[digest.Digest]bool
	tags      map[string]digest.Digest
	records   map[string]bool
}

func snapshot(ctx context.Context, tx wtx, repo string) (*before, error) {
	b := &before{manifests: map[digest.Digest]bool{}, tags: map[string]digest.Digest{}, records: map[string]bool{}}
	rows, err := tx.QueryContext(ctx, `SELECT 'm', digest, '' FROM manifests WHERE repo = ?
		UNION ALL SELECT 't', tag, digest FROM tags WHERE repo = ?
		UNION ALL SELECT 'p', record, '' FROM promotions WHERE repo = ?`, repo, repo, repo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, a, c string
		if err := rows.Scan(&k, &a, &c); err != nil {
			return nil, err
		}
		switch k {
		case "m":
			b.manifests[digest.Digest(a)] = true
		case "t":
			b.tags[a] = digest.Digest(c)
		case "p":
			b.records[a] = true
		}
	}
	return b, rows.Err()
}

// emitRepair emits what a repair added to a repository's index: the
// changes storage committed that a crash kept the index (and so the
// outbox) from taking.
func emitRepair(ctx context.Context, tx wtx, repo string, old *before, c Content) error {
	byDigest := map[digest.Digest]Manifest{}
	for _, m := range c.Manifests {
		byDigest[m.Digest] = m
		if !old.manifests[m.Digest] {
			if err := emitManifest(ctx, tx, m); err != nil {
				return err
			}
		}
		if p, ok := c.Promotions[m.Digest]; ok && p.Trusted && !old.records[m.Digest.String()] {
			if err := emitMove(ctx, tx, repo, m.Digest, p.Body); err != nil {
				return err
			}
		}
	}
	for t, d := range c.Tags {
		if m, ok := byDigest[d]; ok && old.tags[t] != d {
			if err := emitTag(ctx, tx, m, t); err != nil {
				return err
			}
		}
	}
	deleted := map[string]*Tombstone{}
	var order []string
	for _, r := range c.Retired {
		if old.manifests[digest.Digest(r.Tombstone)] {
			continue
		}
		t := deleted[r.Tombstone]
		if t == nil {
			t = &Tombstone{Digest: r.Digest, Record: r.Tombstone, Actor: r.Actor, Reason: r.Reason}
			deleted[r.Tombstone] = t
			order = append(order, r.Tombstone)
		}
		t.Tags = append(t.Tags, r.Tag)
	}
	for _, k := range order {
		if err := emitDeletion(ctx, tx, repo, *deleted[k]); err != nil {
			return err
		}
	}
	return nil
}

// Subscriber is what fanning out needs of a subscription: its name (the
// delivery log's key) and which events it wants.
type Subscriber struct {
	Name  string
	Wants func(typ, repo string) bool
}

// Fanout turns the events each subscription has not seen into pending
// deliveries, in one transaction. A subscription seen for the first time
// starts after the newest event: it receives what happens from now on,
// never a flood of the past.
func (x *Index) Fanout(ctx context.Context, subs []Subscriber) (int, error) {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, lockOutbox); err != nil {
		return 0, err
	}
	var newest int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM outbox_events`).Scan(&newest); err != nil {
		return 0, err
	}
	now := time.Now().UnixNano()
	n := 0
	for _, s := range subs {
		var cursor int64
		err := tx.QueryRowContext(ctx, `SELECT seq FROM outbox_cursors WHERE subscription = ?`, s.Name).Scan(&cursor)
		if errors.Is(err, sql.ErrNoRows) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_cursors (subscription, seq) VALUES (?, ?)`, s.Name, newest); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		if cursor >= newest {
			continue
		}
		rows, err := tx.QueryContext(ctx, `SELECT seq, type, repo FROM outbox_events WHERE seq > ? ORDER BY seq`, cursor)
		if err != nil {
			return 0, err
		}
		type ev struct {
			seq       int64
			typ, repo string
		}
		var evs []ev
		for rows.Next() {
			var e ev
			if err := rows.Scan(&e.seq, &e.typ, &e.repo); err != nil {
				rows.Close()
				return 0, err
			}
			evs = append(evs, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
		for _, e := range evs {
			if !s.Wants(e.typ, e.repo) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_deliveries (subscription, event, state, next_attempt, updated) VALUES (?, ?, 'pending', ?, ?)
				ON CONFLICT (subscription, event) DO NOTHING`, s.Name, e.seq, now, now); err != nil {
				return 0, err
			}
			n++
		}
		if _, err := tx.ExecContext(ctx, `UPDATE outbox_cursors SET seq = ? WHERE subscription = ?`, newest, s.Name); err != nil {
			return 0, err
		}
	}
	return n, tx.Commit()
}

// Due is a delivery to attempt, with its event.
type Due struct {
	Delivery wire.Delivery
	Event    wire.Event
}

// Due lists, per subscription, the pending deliveries that are due, in
// event order, stopping at the subscription's first one that is not due
// yet: a subscription receives its events in order (a deploy hook never
// sees production's older move after its newer one); a delivery that
// keeps failing holds the ones after it until it succeeds or is dead.
func (x *Index) Due(ctx context.Context, now time.Time, perSubscription int) ([]Due, error) {
	subs, err := x.strings(ctx, `SELECT DISTINCT subscription FROM outbox_deliveries WHERE state = 'pending' ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	var out []Due
	for _, sub := range subs {
		ds, err := x.pending(ctx, sub, perSubscription)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if d.Delivery.NextAttempt.After(now) {
				break
			}
			out = append(out, d)
		}
	}
	return out, nil
}

func (x *Index) pending(ctx context.Context, sub string, limit int) ([]Due, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT d.id, d.subscription, d.event, d.state, d.attempts, d.next_attempt, d.last_status, d.last_error, d.updated,
			e.seq, e.id, e.type, e.subject, e.time, e.data
		FROM outbox_deliveries d JOIN outbox_events e ON e.seq = d.event
		WHERE d.subscription = ? AND d.state = 'pending' ORDER BY d.event LIMIT ?`, sub, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Due
	for rows.Next() {
		var d Due
		var next, updated, t int64
		var data string
		if err := rows.Scan(&d.Delivery.ID, &d.Delivery.Subscription, &d.Delivery.Event, &d.Delivery.State, &d.Delivery.Attempts, &next,
			&d.Delivery.LastStatus, &d.Delivery.LastError, &updated, &d.Event.Seq, &d.Event.ID, &d.Event.Type, &d.Event.Subject, &t, &data); err != nil {
			return nil, err
		}
		d.Delivery.NextAttempt, d.Delivery.Updated = time.Unix(0, next).UTC(), time.Unix(0, updated).UTC()
		d.Event.Time, d.Event.Data = time.Unix(0, t).UTC(), json.RawMessage(data)
		out = append(out, d)
	}
	return out, rows.Err()
}

// Attempt is the outcome of one delivery attempt.
type Attempt struct {
	Status int
	Err    string
	// Delivered: the receiver took it. Otherwise Next is when to try
	// again, or Dead: no more attempts.
	Delivered bool
	Dead      bool
	Next      time.Time
}

// Attempted records an attempt's outcome.
func (x *Index) Attempted(ctx context.Context, id int64, a Attempt) error {
	state := DeliveryPending
	switch {
	case a.Delivered:
		state = DeliveryDelivered
	case a.Dead:
		state = DeliveryDead
	}
	_, err := x.db.ExecContext(ctx, `UPDATE outbox_deliveries SET state = ?, attempts = attempts + 1, next_attempt = ?, last_status = ?, last_error = ?, updated = ? WHERE id = ?`,
		state, a.Next.UnixNano(), a.Status, a.Err, time.Now().UnixNano(), id)
	return err
}

// Redeliver makes a dead (or delivered) delivery pending again, now: an
// operator's retry once the receiver is fixed.
func (x *Index) Redeliver(ctx context.Context, id int64) (bool, error) {
	now := time.Now().UnixNano()
	res, err := x.db.ExecContext(ctx, `UPDATE outbox_deliveries SET state = 'pending', attempts = 0, next_attempt = ?, updated = ? WHERE id = ?`, now, now, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// EventFilter selects events from the log.
type EventFilter struct {
	// After is the seq after which to list; Limit bounds the page.
	After int64
	Limit int
	Repo  string
	Type  string
	// Newest lists newest first, below Before when it is set (After is
	// then ignored).
	Newest bool
	Before int64
}

// Events lists events with their deliveries, oldest first.
func (x *Index) Events(ctx context.Context, f EventFilter) ([]wire.Event, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT seq, id, type, repo, subject, time, data FROM outbox_events WHERE seq > ?`
	args := []any{f.After}
	if f.Newest {
		q, args = `SELECT seq, id, type, repo, subject, time, data FROM outbox_events WHERE seq < ?`, []any{f.Before}
		if f.Before <= 0 {
			args[0] = int64(1) << 62
		}
	}
	if f.Repo != "" {
		q += ` AND repo = ?`
		args = append(args, f.Repo)
	}
	if f.Type != "" {
		q += ` AND type = ?`
		args = append(args, f.Type)
	}
	if f.Newest {
		q += ` ORDER BY seq DESC LIMIT ?`
	} else {
		q += ` ORDER BY seq LIMIT ?`
	}
	args = append(args, f.Limit)
	rows, err := x.rd.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	out := []wire.Event{}
	for rows.Next() {
		var e wire.Event
		var t int64
		var data string
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &e.Repository, &e.Subject, &t, &data); err != nil {
			rows.Close()
			return nil, err
		}
		e.Time, e.Data, e.Deliveries = time.Unix(0, t).UTC(), json.RawMessage(data), []wire.Delivery{}
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		ds, err := x.deliveries(ctx, `WHERE d.event = ? ORDER BY d.id`, out[i].Seq)
		if err != nil {
			return nil, err
		}
		out[i].Deliveries = ds
	}
	return out, nil
}

// Deliveries lists the newest deliveries, of one subscription and in one
// state when they are given.
func (x *Index) Deliveries(ctx context.Context, subscription, state string, limit int) ([]wire.Delivery, error) {
	if limit <= 0 {
		limit = 100
	}
	where, args := `WHERE 1 = 1`, []any{}
	if subscription != "" {
		where += ` AND d.subscription = ?`
		args = append(args, subscription)
	}
	if state != "" {
		where += ` AND d.state = ?`
		args = append(args, state)
	}
	return x.deliveries(ctx, where+` ORDER BY d.id DESC LIMIT ?`, append(args, limit)...)
}

func (x *Index) deliveries(ctx context.Context, where string, args ...any) ([]wire.Delivery, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT d.id, d.subscription, d.event, e.repo, d.state, d.attempts, d.next_attempt, d.last_status, d.last_error, d.updated
		FROM outbox_deliveries d JOIN outbox_events e ON e.seq = d.event `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []wire.Delivery{}
	for rows.Next() {
		var d wire.Delivery
		var next, updated int64
		if err := rows.Scan(&d.ID, &d.Subscription, &d.Event, &d.Repository, &d.State, &d.Attempts, &next, &d.LastStatus, &d.LastError, &updated); err != nil {
			return nil, err
		}
		if d.State == DeliveryPending {
			d.NextAttempt = time.Unix(0, next).UTC()
		}
		d.Updated = time.Unix(0, updated).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// PruneEvents forgets events older than before and their deliveries,
// whatever their state: the outbox is a log kept for a time, not forever.
func (x *Index) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	t := before.UnixNano()
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox_deliveries WHERE event IN (SELECT seq FROM outbox_events WHERE time < ?)`, t); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM outbox_events WHERE time < ?`, t)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, tx.Commit()
}

// Delivery returns one delivery, or ok=false.
func (x *Index) Delivery(ctx context.Context, id int64) (wire.Delivery, bool, error) {
	ds, err := x.deliveries(ctx, `WHERE d.id = ?`, id)
	if err != nil || len(ds) == 0 {
		return wire.Delivery{}, false, err
	}
	return ds[0], true, nil
}
