// Package index is the server's SQLite index of what the registry holds:
// manifests (with their subject, artifactType and annotations) and tags.
// It answers the Referrers API and, later, model queries in one lookup
// instead of a walk over storage. Storage stays the source of truth: the
// index is updated in the request that writes storage, repaired at
// start-up after a crash, and can be rebuilt from storage at any time.
package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	_ "modernc.org/sqlite" // pure-Go SQLite driver: no cgo
)

const schema = `
CREATE TABLE IF NOT EXISTS manifests (
	repo          TEXT NOT NULL,
	digest        TEXT NOT NULL,
	media_type    TEXT NOT NULL,
	artifact_type TEXT NOT NULL DEFAULT '',
	size          INTEGER NOT NULL,
	subject       TEXT NOT NULL DEFAULT '',
	annotations   TEXT NOT NULL DEFAULT '{}',
	pushed        TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests (repo, subject, digest) WHERE subject != '';
CREATE TABLE IF NOT EXISTS tags (
	repo   TEXT NOT NULL,
	tag    TEXT NOT NULL,
	digest TEXT NOT NULL,
	kind   TEXT NOT NULL DEFAULT 'other', -- version, stage or other (pkg/tag)
	PRIMARY KEY (repo, tag)
);
CREATE INDEX IF NOT EXISTS tags_digest ON tags (repo, digest);
CREATE INDEX IF NOT EXISTS tags_kind ON tags (kind, tag, repo, digest);
-- Model versions (manifests of a model artifactType) and their metadata.
CREATE TABLE IF NOT EXISTS versions (
	repo        TEXT NOT NULL,
	digest      TEXT NOT NULL,
	created     TEXT NOT NULL DEFAULT '',
	framework   TEXT NOT NULL DEFAULT '',
	description TEXT NOT NULL DEFAULT '',
	size        INTEGER NOT NULL DEFAULT 0,
	files       INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS versions_created ON versions (created, repo, digest);
CREATE INDEX IF NOT EXISTS versions_framework ON versions (framework);
-- The model list (per repository: count and newest created) reads only
-- this index; without it, one row lookup per version (11 ms a page of 100
-- models at 100,000 versions, 1.5 ms with it). IF NOT EXISTS: an index of
-- this schema version gets it at the next start.
CREATE INDEX IF NOT EXISTS versions_repo_created ON versions (repo, created);
CREATE TABLE IF NOT EXISTS version_metrics (
	repo TEXT NOT NULL, digest TEXT NOT NULL, key TEXT NOT NULL, value REAL NOT NULL,
	PRIMARY KEY (repo, digest, key)
);
CREATE INDEX IF NOT EXISTS version_metrics_key ON version_metrics (key, value, repo, digest);
CREATE TABLE IF NOT EXISTS version_props (
	repo TEXT NOT NULL, digest TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
	PRIMARY KEY (repo, digest, kind, key)
);
CREATE INDEX IF NOT EXISTS version_props_key ON version_props (kind, key, value, repo, digest);
-- Promotion records, as their JSON and the fields queries need.
-- trusted is 1 for records signed by the server's key (the stage's hash
-- chain); records a client wrote are kept with trusted = 0 and never count.
CREATE TABLE IF NOT EXISTS promotions (
	repo        TEXT NOT NULL,
	record      TEXT NOT NULL,
	stage       TEXT NOT NULL,
	digest      TEXT NOT NULL,
	time        TEXT NOT NULL,
	body        TEXT NOT NULL,
	trusted     INTEGER NOT NULL DEFAULT 0,
	seq         INTEGER NOT NULL DEFAULT 0,
	prev_record TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (repo, record)
);
CREATE INDEX IF NOT EXISTS promotions_stage ON promotions (repo, stage, time);
CREATE INDEX IF NOT EXISTS promotions_chain ON promotions (repo, stage, trusted, seq);
-- Version tags retired by a deletion (a tombstone record): never reused.
CREATE TABLE IF NOT EXISTS retired (
	repo      TEXT NOT NULL,
	tag       TEXT NOT NULL,
	digest    TEXT NOT NULL,
	tombstone TEXT NOT NULL,
	PRIMARY KEY (repo, tag)
);
-- A stage move in flight (the commit point is its record): written before
-- the record, removed once the tag and the index reflect it. Recovery rolls
-- a move forward when its record reached storage, and drops it otherwise.
CREATE TABLE IF NOT EXISTS moves (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	repo       TEXT NOT NULL,
	stage      TEXT NOT NULL,
	target     TEXT NOT NULL DEFAULT '',
	media_type TEXT NOT NULL DEFAULT '',
	size       INTEGER NOT NULL DEFAULT 0,
	record     TEXT NOT NULL,
	started    TEXT NOT NULL
);
-- Manifests the index could not take, kept to be retried and reported.
CREATE TABLE IF NOT EXISTS failures (
	repo   TEXT NOT NULL,
	digest TEXT NOT NULL,
	error  TEXT NOT NULL,
	PRIMARY KEY (repo, digest)
);
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
-- Lineage edges: version (repo, digest) was made from an input, per record.
CREATE TABLE IF NOT EXISTS lineage (
	repo         TEXT NOT NULL,
	digest       TEXT NOT NULL,
	record       TEXT NOT NULL,
	kind         TEXT NOT NULL,
	uri          TEXT NOT NULL,
	input_digest TEXT NOT NULL DEFAULT '',
	revision     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS lineage_version ON lineage (repo, digest);
CREATE INDEX IF NOT EXISTS lineage_uri ON lineage (uri);
CREATE INDEX IF NOT EXISTS lineage_input ON lineage (input_digest) WHERE input_digest != '';
-- A write in flight: inserted before storage is written, removed once the
-- index has caught up. Rows left after a crash name repositories to repair.
CREATE TABLE IF NOT EXISTS pending (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	repo    TEXT NOT NULL,
	started TEXT NOT NULL
);
-- Image views (pkg/imageview): the digest of a file's tar layer, which
-- only reading the raw blob once can give; and the views built, so one
-- can be found by its digest or its config's. Both are caches of what
-- storage gives again.
CREATE TABLE IF NOT EXISTS tar_digests (
	raw  TEXT NOT NULL,
	path TEXT NOT NULL,
	mode INTEGER NOT NULL,
	size INTEGER NOT NULL,
	tar  TEXT NOT NULL,
	PRIMARY KEY (raw, path, mode)
);
CREATE INDEX IF NOT EXISTS tar_digests_tar ON tar_digests (tar);
CREATE TABLE IF NOT EXISTS views (
	repo    TEXT NOT NULL,
	digest  TEXT NOT NULL, -- the view's index, one of its manifests or configs
	kind    TEXT NOT NULL, -- index, manifest or config
	version TEXT NOT NULL,
	PRIMARY KEY (repo, digest)
);
-- What the headers of a version's weights files say (pkg/weights), for
-- weights.NAME in searches; key '_derived' marks a version read (with or
-- without weights files), so a backfill knows what is left.
CREATE TABLE IF NOT EXISTS version_weights (
	repo   TEXT NOT NULL,
	digest TEXT NOT NULL,
	key    TEXT NOT NULL,
	num    REAL,
	str    TEXT
);
CREATE INDEX IF NOT EXISTS version_weights_num ON version_weights (key, num);
CREATE INDEX IF NOT EXISTS version_weights_str ON version_weights (key, str);
CREATE INDEX IF NOT EXISTS version_weights_version ON version_weights (repo, digest);
`

// schemaVersion changes whenever the schema does. The index holds only
// what storage can give again, so an index of another version is dropped
// and rebuilt rather than migrated.
const schemaVersion = "4"

var tables = []string{"manifests", "tags", "versions", "version_metrics", "version_props", "promotions", "lineage", "pending", "retired", "moves", "failures", "meta", "tar_digests", "views", "version_weights"}

// Index is an open index database.
type Index struct {
	// db is the writer: one connection, so writes queue in Go (in order,
	// cancellable) instead of spinning on SQLite's busy handler, and
	// transactions begin IMMEDIATE, never failing to upgrade a read lock.
	db writer
	// rd is the readers' pool (query_only connections): in WAL mode they
	// read the last committed state without waiting for the writer.
	rd *sql.DB
	// turns admits multi-query reads (searches, model lists) to the
	// readers' pool first come, first served, at most readTurns at once;
	// the pool's two further connections serve the single-row reads of
	// the write path (tags, chain heads) without waiting behind searches.
	turns chan struct{}
	// stale is true when Open found no index, an index of another schema,
	// or a rebuild that never finished: it must be rebuilt before use.
	stale bool
}

// writer is the index's writing connection. Every write goes through it,
// so every write that may have changed the index advances gen after it
// commits (Generation).
type writer struct {
	*sql.DB
	gen *atomic.Uint64
}

func (w writer) Exec(q string, args ...any) (sql.Result, error) {
	defer w.gen.Add(1)
	return w.DB.Exec(q, args...)
}

func (w writer) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	defer w.gen.Add(1)
	return w.DB.ExecContext(ctx, q, args...)
}

func (w writer) BeginTx(ctx context.Context, opts *sql.TxOptions) (wtx, error) {
	tx, err := w.DB.BeginTx(ctx, opts)
	return wtx{Tx: tx, gen: w.gen}, err
}

// wtx is a write transaction: its commit advances the writer's gen.
type wtx struct {
	*sql.Tx
	gen *atomic.Uint64
}

func (t wtx) Commit() error {
	defer t.gen.Add(1)
	return t.Tx.Commit()
}

// Generation changes after every write to the index commits (and only
// then): an answer computed from the index when Generation was g is still
// exact while Generation is g. It is what lets the server cache answers
// with exact invalidation.
func (x *Index) Generation() uint64 { return x.db.gen.Load() }

// readTurns is how many searches and model lists run at once: one fewer
// than there are cores. They are CPU bound (pure-Go SQLite over a
// memory-mapped file), so more adds no throughput, and the core left over
// keeps the registry's own work (manifest and blob GETs) fast while the
// index is busy. Measured with `go run ./bench -suite load` on 2 cores
// (200 clients, mixed routes, hot answers served from the server's cache):
// with 2 turns, manifest GET p99 57 ms and uncached version lists p50 334
// ms; with 1 turn, 29 ms and 515 ms. 14 turns (before the cache) gave a
// third fewer requests per second and 7 times the manifest p50. Requests
// beyond that wait for a turn in arrival order.
func readTurns() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// readerCacheKiB is each read connection's page cache. With the index
// memory-mapped (mmapBytes), pages come from the OS page cache without a
// read call; the page cache keeps the decoded B-tree pages hot.
const readerCacheKiB = 8 << 10

// mmapBytes is how much of the index file SQLite maps instead of reading
// it page by page with pread: under load the reads were a fifth of the
// server's CPU time. The mapping is address space backed by the OS page
// cache, not heap.
const mmapBytes = 1 << 30

// Open opens (creating if needed) the index at path. Stale reports whether
// it must be rebuilt from storage before it is trusted.
func Open(path string) (*Index, error) {
	file := "file:" + filepath.ToSlash(path)
	db, err := sql.Open("sqlite", file+"?_txlock=immediate&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"+
		fmt.Sprintf("&_pragma=mmap_size(%d)", mmapBytes))
	if err != nil {
		return nil, err
	}
	// One writer at a time is SQLite's model: the pool holds exactly one
	// connection, kept open (it also keeps the WAL and its index in place
	// for the readers).
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	x := &Index{db: writer{DB: db, gen: new(atomic.Uint64)}}
	if err := x.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	// Readers open once the writer has made the schema and WAL mode.
	rd, err := sql.Open("sqlite", file+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=foreign_keys(1)"+
		fmt.Sprintf("&_pragma=cache_size(-%d)&_pragma=mmap_size(%d)", readerCacheKiB, mmapBytes))
	if err != nil {
		db.Close()
		return nil, err
	}
	// Idle connections are kept: database/sql keeps 2 by default, so under
	// load the others were closed and reopened (a new connection parses
	// the schema and starts with a cold page cache). Memory is bounded by
	// (readTurns()+2) * readerCacheKiB.
	turns := readTurns()
	rd.SetMaxOpenConns(turns + 2)
	rd.SetMaxIdleConns(turns + 2)
	rd.SetConnMaxIdleTime(0)
	rd.SetConnMaxLifetime(0)
	x.rd = rd
	x.turns = make(chan struct{}, turns)
	return x, nil
}

func (x *Index) init() error {
	var version string
	err := x.db.QueryRow(`SELECT value FROM meta WHERE key = 'schema'`).Scan(&version)
	if err != nil || version != schemaVersion {
		// New, or of another version: start over (storage is the truth).
		for _, t := range tables {
			if _, err := x.db.Exec(`DROP TABLE IF EXISTS ` + t); err != nil {
				return err
			}
		}
		x.stale = true
	}
	if _, err := x.db.Exec(schema + stateSchema); err != nil {
		return err
	}
	if x.stale {
		if _, err := x.db.Exec(`INSERT INTO meta (key, value) VALUES ('schema', ?), ('rebuild', 'needed')`, schemaVersion); err != nil {
			return err
		}
	}
	var rebuild string
	if x.db.QueryRow(`SELECT value FROM meta WHERE key = 'rebuild'`).Scan(&rebuild) == nil {
		x.stale = true // a rebuild was needed or began and never finished
	}
	return nil
}

// Stale reports whether the index must be rebuilt from storage: it is new,
// of another schema, or a rebuild was interrupted.
func (x *Index) Stale() bool { return x.stale }

// BeginRebuild marks a full rebuild in progress, so that a crash during
// it leaves an index that the next start rebuilds again instead of
// trusting half of it.
func (x *Index) BeginRebuild(ctx context.Context) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('rebuild', 'running') ON CONFLICT (key) DO UPDATE SET value = excluded.value`)
	return err
}

// EndRebuild marks a full rebuild complete.
func (x *Index) EndRebuild(ctx context.Context) error {
	_, err := x.db.ExecContext(ctx, `DELETE FROM meta WHERE key = 'rebuild'`)
	if err == nil {
		x.stale = false
	}
	return err
}

// Close closes the database: readers first, so the writer's connection,
// the last to close, checkpoints the WAL.
func (x *Index) Close() error {
	rerr := x.rd.Close()
	return errors.Join(rerr, x.db.Close())
}

// Manifest is one indexed manifest.
type Manifest struct {
	Repo         string
	Digest       digest.Digest
	MediaType    string
	ArtifactType string
	Size         int64
	Subject      digest.Digest
	Annotations  map[string]string
	// Kind is the manifest's classification (model.ClassifyManifest).
	Kind model.Kind
	// Raw is the manifest's bytes, read for model metadata; not stored.
	Raw []byte
}

// Describe reads what the index keeps from a manifest's bytes, classified
// by model.ClassifyManifest, the one classification the gate and the
// reader share. The artifactType of an image manifest without one is its
// config media type, as the Referrers API specifies.
func Describe(repo string, mediaType string, raw []byte) (Manifest, error) {
	c, err := model.ClassifyManifest(mediaType, raw)
	if err != nil {
		return Manifest{}, err
	}
	out := Manifest{Repo: repo, Digest: digest.FromBytes(raw), MediaType: c.MediaType, ArtifactType: c.ArtifactType,
		Size: int64(len(raw)), Annotations: c.Annotations, Kind: c.Kind, Raw: raw}
	if c.Subject != nil {
		out.Subject = c.Subject.Digest
	}
	return out, nil
}

// PutManifest records a manifest and, when tag is not empty, points tag
// at it, emitting (in the same transaction) the events a new referrer or a
// new version tag announce.
func (x *Index) PutManifest(ctx context.Context, m Manifest, tag string) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	existed, err := hasManifest(ctx, tx, m.Repo, m.Digest)
	if err != nil {
		return err
	}
	if err := putManifest(ctx, tx, m, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	if !existed {
		if err := emitManifest(ctx, tx, m); err != nil {
			return err
		}
	}
	if tag != "" {
		prev, err := tagOf(ctx, tx, m.Repo, tag)
		if err != nil {
			return err
		}
		if err := putTag(ctx, tx, m.Repo, tag, m.Digest); err != nil {
			return err
		}
		if prev != m.Digest {
			if err := emitTag(ctx, tx, m, tag); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

func putTag(ctx context.Context, tx wtx, repo, t string, d digest.Digest) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO tags (repo, tag, digest, kind) VALUES (?, ?, ?, ?)
		ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest`, repo, t, d.String(), tag.Classify(t).String())
	return err
}

func putManifest(ctx context.Context, tx wtx, m Manifest, pushed string) error {
	ann, err := json.Marshal(m.Annotations)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO manifests (repo, digest, media_type, artifact_type, size, subject, annotations, pushed)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type, artifact_type = excluded.artifact_type,
			size = excluded.size, subject = excluded.subject, annotations = excluded.annotations`,
		m.Repo, m.Digest.String(), m.MediaType, m.ArtifactType, m.Size, m.Subject.String(), string(ann), pushed)
	if err != nil {
		return err
	}
	if m.Kind != model.KindModel || m.Raw == nil {
		return nil
	}
	v, err := model.Parse(ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size}, m.Raw)
	if err != nil {
		// A model the server cannot read is refused at the door; one in
		// storage from before is indexed as a plain manifest and reported.
		return fmt.Errorf("%w: %v", ErrUnreadableModel, err)
	}
	return putVersion(ctx, tx, m.Repo, v)
}

func putVersion(ctx context.Context, tx wtx, repo string, v *model.Version) error {
	d := v.Descriptor.Digest.String()
	for _, q := range []string{`DELETE FROM version_metrics WHERE repo = ? AND digest = ?`, `DELETE FROM version_props WHERE repo = ? AND digest = ?`} {
		if _, err := tx.ExecContext(ctx, q, repo, d); err != nil {
			return err
		}
	}
	md := v.Metadata
	created := ""
	if !md.Created.IsZero() {
		created = md.Created.UTC().Format(time.RFC3339)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO versions (repo, digest, created, framework, description, size, files) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (repo, digest) DO UPDATE SET created = excluded.created, framework = excluded.framework,
			description = excluded.description, size = excluded.size, files = excluded.files`,
		repo, d, created, md.Framework, md.Description, v.Size(), len(v.Files)); err != nil {
		return err
	}
	for k, val := range md.Metrics {
		if _, err := tx.ExecContext(ctx, `INSERT INTO version_metrics (repo, digest, key, value) VALUES (?, ?, ?, ?)`, repo, d, k, val); err != nil {
			return err
		}
	}
	for kind, kv := range map[string]map[string]string{"params": md.Params, "labels": md.Labels} {
		for k, val := range kv {
			if _, err := tx.ExecContext(ctx, `INSERT INTO version_props (repo, digest, kind, key, value) VALUES (?, ?, ?, ?, ?)`, repo, d, kind, k, val); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrUnreadableModel means a manifest classified as a model could not be
// read as one (its metadata or files are invalid).
var ErrUnreadableModel = errors.New("a model manifest that cannot be read")

// Promotion is a promotion record as the index keeps it: decoded, and
// checked against the server's key by the caller.
type Promotion struct {
	Stage  string
	Digest string
	Time   time.Time
	// Trusted is true for records signed by the server's key: only those
	// make up a stage's history.
	Trusted    bool
	Seq        int64
	PrevRecord string
	// Adopts lists, on a genesis anchor, the records written before the
	// chain existed that the anchor vouches for: they join the history.
	Adopts []string
	// Body is the record as JSON, served as is by the model API.
	Body []byte
}

// Retirement is a version tag a deletion retired for good.
type Retirement struct {
	Tag, Digest, Tombstone string
	// Actor and Reason are the tombstone's, for the deletion's event.
	Actor, Reason string
}

// PutPromotion indexes a promotion record (manifest m).
func (x *Index) PutPromotion(ctx context.Context, m Manifest, p Promotion) error {
	return putPromotion(ctx, x.db, m, p)
}

// PutLineage indexes a lineage record (manifest m) from its layer's bytes.
func (x *Index) PutLineage(ctx context.Context, m Manifest, body []byte) error {
	return putLineage(ctx, x.db, m, body)
}

// Retire records version tags retired by a tombstone.
func (x *Index) Retire(ctx context.Context, repo string, rs []Retirement) error {
	return retire(ctx, x.db, repo, rs)
}

func retire(ctx context.Context, db execer, repo string, rs []Retirement) error {
	for _, r := range rs {
		if _, err := db.ExecContext(ctx, `INSERT INTO retired (repo, tag, digest, tombstone) VALUES (?, ?, ?, ?) ON CONFLICT (repo, tag) DO NOTHING`,
			repo, r.Tag, r.Digest, r.Tombstone); err != nil {
			return err
		}
	}
	return nil
}

// Retired returns the tombstone that retired a version tag, or "".
func (x *Index) Retired(ctx context.Context, repo, tag string) (string, error) {
	var t string
	err := x.rd.QueryRowContext(ctx, `SELECT tombstone FROM retired WHERE repo = ? AND tag = ?`, repo, tag).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return t, err
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func putPromotion(ctx context.Context, db execer, m Manifest, p Promotion) error {
	trusted := 0
	if p.Trusted {
		trusted = 1
	}
	_, err := db.ExecContext(ctx, `INSERT INTO promotions (repo, record, stage, digest, time, body, trusted, seq, prev_record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (repo, record) DO NOTHING`, m.Repo, m.Digest.String(), p.Stage, p.Digest, p.Time.UTC().Format(time.RFC3339Nano), string(p.Body), trusted, p.Seq, p.PrevRecord)
	if err != nil || !p.Trusted {
		return err
	}
	return adopt(ctx, db, m.Repo, p)
}

// adopt marks the pre-chain records a trusted anchor vouches for as part of
// the stage's history.
func adopt(ctx context.Context, db execer, repo string, p Promotion) error {
	for _, r := range p.Adopts {
		if _, err := db.ExecContext(ctx, `UPDATE promotions SET trusted = 1 WHERE repo = ? AND record = ? AND stage = ? AND seq = 0`, repo, r, p.Stage); err != nil {
			return err
		}
	}
	return nil
}

func putLineage(ctx context.Context, db execer, m Manifest, body []byte) error {
	st, err := lineage.Parse(body, m.Subject)
	if err != nil {
		return fmt.Errorf("lineage record %s: %w", m.Digest, err)
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM lineage WHERE repo = ? AND record = ?`, m.Repo, m.Digest.String()); err != nil {
		return err
	}
	for _, in := range st.Predicate.Inputs {
		d := ""
		if hex := in.Digest["sha256"]; hex != "" {
			d = "sha256:" + hex
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO lineage (repo, digest, record, kind, uri, input_digest, revision) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			m.Repo, m.Subject.String(), m.Digest.String(), in.Kind, in.URI, d, in.Revision); err != nil {
			return err
		}
	}
	return nil
}

// ChainHead is the newest trusted record of a stage: its sequence number
// and record digest (0 and "" for a stage with no history).
func (x *Index) ChainHead(ctx context.Context, repo, stage string) (seq int64, record string, err error) {
	err = x.rd.QueryRowContext(ctx, `SELECT seq, record FROM promotions WHERE repo = ? AND stage = ? AND trusted = 1 ORDER BY seq DESC LIMIT 1`, repo, stage).Scan(&seq, &record)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	return seq, record, err
}

// EverIn lists the stages whose trusted history ever pointed at a digest.
func (x *Index) EverIn(ctx context.Context, repo string, d digest.Digest) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT stage FROM promotions WHERE repo = ? AND digest = ? AND trusted = 1 ORDER BY stage`, repo, d.String())
}

// Untrusted lists the digests of promotion records of a repository that
// are not signed by the server (written by clients, or before the chain).
func (x *Index) Untrusted(ctx context.Context, repo string) ([]string, error) {
	return x.strings(ctx, `SELECT record FROM promotions WHERE repo = ? AND trusted = 0 ORDER BY time, record`, repo)
}

// Legacy lists, per "repo\x00stage", the untrusted promotion records of
// stages that have no trusted record, oldest first: the histories written
// before records were chained (or by clients).
func (x *Index) Legacy(ctx context.Context) (map[string][]string, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT p.repo, p.stage, p.record FROM promotions p WHERE p.trusted = 0
		AND NOT EXISTS (SELECT 1 FROM promotions q WHERE q.repo = p.repo AND q.stage = p.stage AND q.trusted = 1)
		ORDER BY p.repo, p.stage, p.time, p.record`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var repo, stage, record string
		if err := rows.Scan(&repo, &stage, &record); err != nil {
			return nil, err
		}
		out[repo+"\x00"+stage] = append(out[repo+"\x00"+stage], record)
	}
	return out, rows.Err()
}

// Move is a stage move in flight (see the moves table).
type Move struct {
	ID        int64
	Repo      string
	Stage     string
	Target    digest.Digest // "" when the move empties the stage
	MediaType string
	Size      int64
	Record    digest.Digest
}

// BeginMove records a stage move about to be made, before its record is
// written; EndMove (in the index transaction of CommitMove) removes it.
func (x *Index) BeginMove(ctx context.Context, mv Move) (int64, error) {
	res, err := x.db.ExecContext(ctx, `INSERT INTO moves (repo, stage, target, media_type, size, record, started) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		mv.Repo, mv.Stage, mv.Target.String(), mv.MediaType, mv.Size, mv.Record.String(), time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// Moves lists the moves in flight, oldest first: after a crash, the ones
// recovery must finish or drop.
func (x *Index) Moves(ctx context.Context) ([]Move, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT id, repo, stage, target, media_type, size, record FROM moves ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Move
	for rows.Next() {
		var mv Move
		var target, record string
		if err := rows.Scan(&mv.ID, &mv.Repo, &mv.Stage, &target, &mv.MediaType, &mv.Size, &record); err != nil {
			return nil, err
		}
		mv.Target, mv.Record = digest.Digest(target), digest.Digest(record)
		out = append(out, mv)
	}
	return out, rows.Err()
}

// DropMove forgets a move (finished by recovery, or never committed).
func (x *Index) DropMove(ctx context.Context, id int64) error {
	_, err := x.db.ExecContext(ctx, `DELETE FROM moves WHERE id = ?`, id)
	return err
}

// CommitMove makes the index reflect a finished move in one transaction:
// the version and the stage tag (or the tag's removal), the record, and
// the move's end.
func (x *Index) CommitMove(ctx context.Context, id int64, version *Manifest, stage string, record Manifest, p Promotion) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if version != nil {
		if err := putManifest(ctx, tx, *version, now); err != nil {
			return err
		}
		if err := putTag(ctx, tx, version.Repo, stage, version.Digest); err != nil {
			return err
		}
	} else if _, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE repo = ? AND tag = ?`, record.Repo, stage); err != nil {
		return err
	}
	if err := putManifest(ctx, tx, record, now); err != nil {
		return err
	}
	var seen int
	err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM promotions WHERE repo = ? AND record = ?`, record.Repo, record.Digest.String()).Scan(&seen)
	if err != nil {
		return err
	}
	if err := putPromotion(ctx, tx, record, p); err != nil {
		return err
	}
	if seen == 0 && p.Trusted {
		// A recovery finishing a move a repair already indexed (and
		// announced) emits nothing again.
		if err := emitMove(ctx, tx, record.Repo, record.Digest, p.Body); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM moves WHERE id = ?`, id); err != nil {
		return err
	}
	return tx.Commit()
}

// Failures lists the manifests the index could not take, as "repo@digest: error".
func (x *Index) Failures(ctx context.Context) ([]string, error) {
	return x.strings(ctx, `SELECT repo || '@' || digest || ': ' || error FROM failures ORDER BY repo, digest`)
}

// Fail records a manifest the index could not take, so it is reported
// and retried (by the next repair or rebuild of its repository).
func (x *Index) Fail(ctx context.Context, repo string, d digest.Digest, cause error) error {
	return fail(ctx, x.db, repo, d, cause)
}

func fail(ctx context.Context, db execer, repo string, d digest.Digest, cause error) error {
	_, err := db.ExecContext(ctx, `INSERT INTO failures (repo, digest, error) VALUES (?, ?, ?) ON CONFLICT (repo, digest) DO UPDATE SET error = excluded.error`,
		repo, d.String(), cause.Error())
	return err
}

// Edge is one lineage edge: version Repo@Digest was made from an input.
type Edge = wire.Edge

// Inputs lists the lineage edges out of one version.
func (x *Index) Inputs(ctx context.Context, repo string, d digest.Digest) ([]Edge, error) {
	return x.edges(ctx, `WHERE repo = ? AND digest = ?`, repo, d.String())
}

// Descendants lists the versions made directly from an input, named by URI
// or by digest.
func (x *Index) Descendants(ctx context.Context, uriOrDigest string) ([]Edge, error) {
	return x.edges(ctx, `WHERE uri = ? OR input_digest = ? OR uri LIKE ? ESCAPE '\'`, uriOrDigest, uriOrDigest, "%@"+strings.ReplaceAll(uriOrDigest, "%", `\%`))
}

func (x *Index) edges(ctx context.Context, where string, args ...any) ([]Edge, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT DISTINCT repo, digest, kind, uri, input_digest, revision FROM lineage `+where+` ORDER BY repo, digest, kind, uri`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Edge{}
	for rows.Next() {
		var e Edge
		if err := rows.Scan(&e.Repo, &e.Digest, &e.Kind, &e.URI, &e.InputDigest, &e.Revision); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteManifest forgets a manifest and the tags pointing at it, as
// distribution does when a manifest is deleted by digest.
func (x *Index) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{`DELETE FROM manifests WHERE repo = ? AND digest = ?`, `DELETE FROM tags WHERE repo = ? AND digest = ?`,
		`DELETE FROM versions WHERE repo = ? AND digest = ?`, `DELETE FROM version_metrics WHERE repo = ? AND digest = ?`,
		`DELETE FROM version_props WHERE repo = ? AND digest = ?`, `DELETE FROM lineage WHERE repo = ? AND record = ?`} {
		if _, err := tx.ExecContext(ctx, q, repo, d.String()); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// DeleteTag forgets one tag.
func (x *Index) DeleteTag(ctx context.Context, repo, tag string) error {
	_, err := x.db.ExecContext(ctx, `DELETE FROM tags WHERE repo = ? AND tag = ?`, repo, tag)
	return err
}

// Tag returns the digest a tag points at, or "" when it does not exist.
func (x *Index) Tag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	var d string
	err := x.rd.QueryRowContext(ctx, `SELECT digest FROM tags WHERE repo = ? AND tag = ?`, repo, tag).Scan(&d)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return digest.Digest(d), err
}

// Get returns one manifest, or ok=false.
func (x *Index) Get(ctx context.Context, repo string, d digest.Digest) (Manifest, bool, error) {
	row := x.rd.QueryRowContext(ctx, `SELECT media_type, artifact_type, size, subject, annotations FROM manifests WHERE repo = ? AND digest = ?`, repo, d.String())
	m := Manifest{Repo: repo, Digest: d}
	var subject, ann string
	err := row.Scan(&m.MediaType, &m.ArtifactType, &m.Size, &subject, &ann)
	if errors.Is(err, sql.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	m.Subject = digest.Digest(subject)
	if err := json.Unmarshal([]byte(ann), &m.Annotations); err != nil {
		return m, false, err
	}
	return m, true, nil
}

// TagsOf lists the tags pointing at a digest.
func (x *Index) TagsOf(ctx context.Context, repo string, d digest.Digest) ([]string, error) {
	return x.strings(ctx, `SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY tag`, repo, d.String())
}

// strings runs a query of one text column.
func (x *Index) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := x.rd.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Referrers lists the manifests whose subject is subject, ordered by
// digest, after the digest after (for paging), at most limit of them, and
// only of artifactType when it is not empty.
func (x *Index) Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType, after string, limit int) ([]ocispec.Descriptor, error) {
	q := `SELECT digest, media_type, artifact_type, size, annotations FROM manifests WHERE repo = ? AND subject = ? AND digest > ?`
	args := []any{repo, subject.String(), after}
	if artifactType != "" {
		q += ` AND artifact_type = ?`
		args = append(args, artifactType)
	}
	q += ` ORDER BY digest LIMIT ?`
	args = append(args, limit)
	rows, err := x.rd.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ocispec.Descriptor{}
	for rows.Next() {
		var d ocispec.Descriptor
		var dg, ann string
		if err := rows.Scan(&dg, &d.MediaType, &d.ArtifactType, &d.Size, &ann); err != nil {
			return nil, err
		}
		d.Digest = digest.Digest(dg)
		if err := json.Unmarshal([]byte(ann), &d.Annotations); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Begin records a write in flight to repo; call the returned function once
// the index reflects it.
func (x *Index) Begin(ctx context.Context, repo string) (done func(), err error) {
	res, err := x.db.ExecContext(ctx, `INSERT INTO pending (repo, started) VALUES (?, ?)`, repo, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	return func() { x.db.ExecContext(context.WithoutCancel(ctx), `DELETE FROM pending WHERE id = ?`, id) }, nil
}

// Pending lists the repositories with writes that never finished (a crash).
func (x *Index) Pending(ctx context.Context) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT repo FROM pending ORDER BY repo`)
}

// Content is what storage holds for one repository, read for a rebuild.
type Content struct {
	Manifests []Manifest
	Tags      map[string]digest.Digest
	// Lineage maps each lineage record manifest to its layer's bytes.
	Lineage map[digest.Digest][]byte
	// Promotions maps each promotion record manifest to its decoded record.
	Promotions map[digest.Digest]Promotion
	Retired    []Retirement
	// Repair marks a repair after a crash: what storage holds beyond the
	// index is what the crash kept from being announced, and its events
	// are emitted. A full rebuild emits none (subscribers are not flooded
	// with the registry's past).
	Repair bool
}

// ReplaceRepo swaps a repository's whole content for what storage holds,
// in one transaction, and clears its pending writes. A manifest the index
// cannot take is recorded in failures (reported, retried at the next
// repair) and never stops the rest.
func (x *Index) ReplaceRepo(ctx context.Context, repo string, c Content) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var old *before
	if c.Repair {
		if old, err = snapshot(ctx, tx, repo); err != nil {
			return err
		}
	}
	for _, table := range []string{"manifests", "tags", "pending", "versions", "version_metrics", "version_props", "version_weights", "promotions", "lineage", "retired", "failures"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE repo = ?`, repo); err != nil {
			return err
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	// each runs one manifest's rows under a savepoint, so a failure takes
	// back only that manifest's rows and is recorded.
	each := func(m Manifest, fn func() error) error {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT one`); err != nil {
			return err
		}
		if ferr := fn(); ferr != nil {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO one`); err != nil {
				return err
			}
			if err := fail(ctx, tx, repo, m.Digest, ferr); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `RELEASE one`)
		return err
	}
	for _, m := range c.Manifests {
		err := each(m, func() error {
			err := putManifest(ctx, tx, m, now)
			if errors.Is(err, ErrUnreadableModel) {
				// Keep it as a plain manifest, and report it.
				bare := m
				bare.Raw = nil
				if perr := putManifest(ctx, tx, bare, now); perr != nil {
					return perr
				}
				return fail(ctx, tx, repo, m.Digest, err)
			}
			if err != nil {
				return err
			}
			if body, ok := c.Lineage[m.Digest]; ok {
				if err := putLineage(ctx, tx, m, body); err != nil {
					return err
				}
			}
			if p, ok := c.Promotions[m.Digest]; ok {
				return putPromotion(ctx, tx, m, p)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for t, d := range c.Tags {
		if err := putTag(ctx, tx, repo, t, d); err != nil {
			return err
		}
	}
	if err := retire(ctx, tx, repo, c.Retired); err != nil {
		return err
	}
	for _, p := range c.Promotions {
		if p.Trusted && len(p.Adopts) > 0 {
			if err := adopt(ctx, tx, repo, p); err != nil {
				return err
			}
		}
	}
	if old != nil {
		if err := emitRepair(ctx, tx, repo, old, c); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Repos lists every indexed repository.
func (x *Index) Repos(ctx context.Context) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT repo FROM manifests UNION SELECT DISTINCT repo FROM tags ORDER BY 1`)
}

// Dump returns every row, in a stable order, for comparing an index with
// its rebuild.
func (x *Index) Dump(ctx context.Context) ([]string, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT 'm', repo, digest, media_type || '|' || artifact_type || '|' || size || '|' || subject || '|' || annotations FROM manifests
		UNION ALL SELECT 't', repo, tag, digest || '|' || kind FROM tags
		UNION ALL SELECT 'v', repo, digest, created || '|' || framework || '|' || description || '|' || size || '|' || files FROM versions
		UNION ALL SELECT 'vm', repo, digest || ' ' || key, value FROM version_metrics
		UNION ALL SELECT 'vp', repo, digest || ' ' || kind || ' ' || key, value FROM version_props
		UNION ALL SELECT 'p', repo, record, stage || '|' || digest || '|' || time || '|' || trusted || '|' || seq || '|' || prev_record || '|' || body FROM promotions
		UNION ALL SELECT 'r', repo, tag, digest || '|' || tombstone FROM retired
		UNION ALL SELECT 'l', repo, record || ' ' || digest, kind || '|' || uri || '|' || input_digest || '|' || revision FROM lineage
		ORDER BY 1, 2, 3`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k, a, b, c string
		if err := rows.Scan(&k, &a, &b, &c); err != nil {
			return nil, err
		}
		out = append(out, k+" "+a+" "+b+" "+c)
	}
	return out, rows.Err()
}
