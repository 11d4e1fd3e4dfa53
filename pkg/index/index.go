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
	"runtime"
	"time"

	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// legacySchema is the schema version an index from before versioned
// migrations records in meta: one of this version is adopted as it is by
// the first migration, one of an older version has its cache tables
// dropped first (they are rebuilt from storage).
const legacySchema = "4"

// tables are the cache tables: what storage can give again. The state
// tables (outbox_*, robots) are not among them: nothing drops those.
var tables = []string{"manifests", "tags", "versions", "version_metrics", "version_props", "promotions", "lineage", "pending", "retired", "moves", "failures", "meta", "tar_digests", "views", "version_weights"}

// Index is an open index database.
type Index struct {
	// db is the writer (see writer).
	db writer
	// rd is the readers' pool. On SQLite, query_only connections that in
	// WAL mode read the last committed state without waiting for the
	// writer; on PostgreSQL, the one pool the writer uses too.
	rd reader
	// d is the database's dialect.
	d dialect
	// turns admits multi-query reads (searches, model lists) to the
	// readers' pool first come, first served, at most readTurns at once;
	// the pool's further connections serve the single-row reads of the
	// write path (tags, chain heads) without waiting behind searches.
	turns chan struct{}
	// stale is true when Open found no index, an index of another schema,
	// or a rebuild that never finished: it must be rebuilt before use.
	stale bool
	// stop ends the PostgreSQL listener (listen), if any.
	stop func()
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
	return x.putNew(ctx, m, func(tx wtx, existed bool) error {
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
		return nil
	})
}

// putNew indexes m in a transaction holding its repository's lock, then
// runs then (the events and rows that depend on whether the index held m
// before) in the same transaction, and commits.
func (x *Index) putNew(ctx context.Context, m Manifest, then func(tx wtx, existed bool) error) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lockRepo(ctx, m.Repo); err != nil {
		return err
	}
	existed, err := hasManifest(ctx, tx, m.Repo, m.Digest)
	if err != nil {
		return err
	}
	if err := putManifest(ctx, tx, m, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	if err := then(tx, existed); err != nil {
		return err
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
	return x.repoTx(ctx, m.Repo, func(tx wtx) error { return putPromotion(ctx, tx, m, p) })
}

// repoTx runs fn in a write transaction holding repo's row lock
// (lockRepoRows on PostgreSQL).
func (x *Index) repoTx(ctx context.Context, repo string, fn func(tx wtx) error) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lockRepo(ctx, repo); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// PutLineage indexes a lineage record (manifest m) from its layer's bytes.
func (x *Index) PutLineage(ctx context.Context, m Manifest, body []byte) error {
	return x.repoTx(ctx, m.Repo, func(tx wtx) error { return putLineage(ctx, tx, m, body) })
}

// Retire records version tags retired by a tombstone.
func (x *Index) Retire(ctx context.Context, repo string, rs []Retirement) error {
	return x.repoTx(ctx, repo, func(tx wtx) error { return retire(ctx, tx, repo, rs) })
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

// UntrustedOf lists the digests of the promotion records of one stage
// that are not in its history (trusted = 0): records clients pushed, and
// records copied from other registries (docs/promotion.md, "History at
// the source"), oldest first.
func (x *Index) UntrustedOf(ctx context.Context, repo, stage string) ([]string, error) {
	return x.strings(ctx, `SELECT record FROM promotions WHERE repo = ? AND stage = ? AND trusted = 0 ORDER BY time, record`, repo, stage)
}

// CopiedStages lists the stages of repo that have records outside their
// history (UntrustedOf), by name.
func (x *Index) CopiedStages(ctx context.Context, repo string) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT stage FROM promotions WHERE repo = ? AND trusted = 0 ORDER BY stage`, repo)
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
	return x.db.insertID(ctx, `INSERT INTO moves (repo, stage, target, media_type, size, record, started) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		mv.Repo, mv.Stage, mv.Target.String(), mv.MediaType, mv.Size, mv.Record.String(), time.Now().UTC().Format(time.RFC3339Nano))
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

// HasMove reports whether a move is still in flight (not yet committed
// or dropped, by this process or another replica).
func (x *Index) HasMove(ctx context.Context, id int64) (bool, error) {
	var n int
	err := x.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM moves WHERE id = ?`, id).Scan(&n)
	return n > 0, err
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
	if err := tx.lockRepo(ctx, record.Repo); err != nil {
		return err
	}
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
	suffix, arg := x.d.endsWith("uri", "@"+uriOrDigest)
	return x.edges(ctx, `WHERE uri = ? OR input_digest = ? OR `+suffix, uriOrDigest, uriOrDigest, arg)
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
	if err := tx.lockRepo(ctx, repo); err != nil {
		return err
	}
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
	return x.repoTx(ctx, repo, func(tx wtx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE repo = ? AND tag = ?`, repo, tag)
		return err
	})
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
	id, err := x.db.insertID(ctx, `INSERT INTO pending (repo, started) VALUES (?, ?)`, repo, time.Now().UTC().Format(time.RFC3339Nano))
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

// ReplaceRepo swaps a repository's whole content for c, in one
// transaction, and clears its pending writes. A manifest the index cannot
// take is recorded in failures (reported, retried at the next repair) and
// never stops the rest.
func (x *Index) ReplaceRepo(ctx context.Context, repo string, c Content) error {
	return x.RebuildRepo(ctx, repo, func(context.Context) (Content, error) { return c, nil })
}

// RebuildRepo is ReplaceRepo with the content read by read while the
// transaction holds the repository's row lock: on PostgreSQL, a write of
// another replica to the repository either committed before the read (and
// storage, written first, holds it) or waits until the new content is
// committed, so a rebuild never drops a write made while it ran.
func (x *Index) RebuildRepo(ctx context.Context, repo string, read func(ctx context.Context) (Content, error)) error {
	var c Content
	var err error
	if !x.d.postgres {
		// One process writes a SQLite index: read before taking the
		// writer, which other writes would wait for meanwhile.
		if c, err = read(ctx); err != nil {
			return err
		}
	}
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if x.d.postgres {
		if err := tx.lockRepo(ctx, repo); err != nil {
			return err
		}
		if c, err = read(ctx); err != nil {
			return err
		}
	}
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
		UNION ALL SELECT 'vm', repo, digest || ' ' || key, CAST(value AS TEXT) FROM version_metrics
		UNION ALL SELECT 'vp', repo, digest || ' ' || kind || ' ' || key, value FROM version_props
		UNION ALL SELECT 'p', repo, record, stage || '|' || digest || '|' || time || '|' || trusted || '|' || seq || '|' || prev_record || '|' || body FROM promotions
		UNION ALL SELECT 'r', repo, tag, digest || '|' || tombstone FROM retired
		UNION ALL SELECT 'l', repo, record || ' ' || digest, kind || '|' || uri || '|' || input_digest || '|' || revision FROM lineage
		ORDER BY 1, 2, 3, 4`)
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
