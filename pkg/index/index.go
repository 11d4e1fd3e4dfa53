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
	"strings"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/tag"
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
CREATE TABLE IF NOT EXISTS promotions (
	repo     TEXT NOT NULL,
	record   TEXT NOT NULL,
	stage    TEXT NOT NULL,
	digest   TEXT NOT NULL,
	time     TEXT NOT NULL,
	body     TEXT NOT NULL,
	PRIMARY KEY (repo, record)
);
CREATE INDEX IF NOT EXISTS promotions_stage ON promotions (repo, stage, time);
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
`

// Index is an open index database.
type Index struct {
	db *sql.DB
}

// Open opens (creating if needed) the index at path.
func Open(path string) (*Index, error) {
	dsn := "file:" + filepath.ToSlash(path) + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// One writer at a time is SQLite's model; readers share the WAL.
	db.SetMaxOpenConns(8)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	return &Index{db: db}, nil
}

// Close closes the database.
func (x *Index) Close() error { return x.db.Close() }

// Manifest is one indexed manifest.
type Manifest struct {
	Repo         string
	Digest       digest.Digest
	MediaType    string
	ArtifactType string
	Size         int64
	Subject      digest.Digest
	Annotations  map[string]string
	// Raw is the manifest's bytes, read for model metadata; not stored.
	Raw []byte
}

// Describe reads what the index keeps from a manifest's bytes. The
// artifactType of an image manifest without one is its config media type,
// as the Referrers API specifies.
func Describe(repo string, mediaType string, raw []byte) (Manifest, error) {
	var m struct {
		MediaType    string              `json:"mediaType"`
		ArtifactType string              `json:"artifactType"`
		Config       *ocispec.Descriptor `json:"config"`
		Subject      *ocispec.Descriptor `json:"subject"`
		Annotations  map[string]string   `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return Manifest{}, fmt.Errorf("manifest is not JSON: %w", err)
	}
	if m.MediaType != "" {
		mediaType = m.MediaType
	}
	out := Manifest{Repo: repo, Digest: digest.FromBytes(raw), MediaType: mediaType, ArtifactType: m.ArtifactType, Size: int64(len(raw)), Annotations: m.Annotations, Raw: raw}
	if out.ArtifactType == "" && m.Config != nil && mediaType == ocispec.MediaTypeImageManifest {
		out.ArtifactType = m.Config.MediaType
	}
	if m.Subject != nil {
		out.Subject = m.Subject.Digest
	}
	return out, nil
}

// PutManifest records a manifest and, when tag is not empty, points tag at it.
func (x *Index) PutManifest(ctx context.Context, m Manifest, tag string) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := putManifest(ctx, tx, m, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	if tag != "" {
		if err := putTag(ctx, tx, m.Repo, tag, m.Digest); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func putTag(ctx context.Context, tx *sql.Tx, repo, t string, d digest.Digest) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO tags (repo, tag, digest, kind) VALUES (?, ?, ?, ?)
		ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest`, repo, t, d.String(), tag.Classify(t).String())
	return err
}

func putManifest(ctx context.Context, tx *sql.Tx, m Manifest, pushed string) error {
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
	if !mediatypes.IsModelArtifactType(m.ArtifactType) || m.Raw == nil {
		return nil
	}
	v, err := model.Parse(ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size}, m.Raw)
	if err != nil {
		return nil // not readable as a model: indexed as a plain manifest
	}
	return putVersion(ctx, tx, m.Repo, v)
}

func putVersion(ctx context.Context, tx *sql.Tx, repo string, v *model.Version) error {
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

// PutRecord indexes a modelreg record (a promotion or lineage referrer
// manifest m) from its layer's bytes.
func (x *Index) PutRecord(ctx context.Context, m Manifest, body []byte) error {
	return putRecord(ctx, x.db, m, body)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func putRecord(ctx context.Context, db execer, m Manifest, body []byte) error {
	switch m.ArtifactType {
	case mediatypes.ArtifactTypePromotion:
		var r struct {
			Stage  string    `json:"stage"`
			Digest string    `json:"digest"`
			Time   time.Time `json:"time"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("promotion record %s: %w", m.Digest, err)
		}
		_, err := db.ExecContext(ctx, `INSERT INTO promotions (repo, record, stage, digest, time, body) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (repo, record) DO NOTHING`, m.Repo, m.Digest.String(), r.Stage, r.Digest, r.Time.UTC().Format(time.RFC3339Nano), string(body))
		return err
	case mediatypes.ArtifactTypeLineage:
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
	}
	return nil
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
	rows, err := x.db.QueryContext(ctx, `SELECT DISTINCT repo, digest, kind, uri, input_digest, revision FROM lineage `+where+` ORDER BY repo, digest, kind, uri`, args...)
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
		`DELETE FROM version_props WHERE repo = ? AND digest = ?`, `DELETE FROM promotions WHERE repo = ? AND record = ?`,
		`DELETE FROM lineage WHERE repo = ? AND record = ?`} {
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
	err := x.db.QueryRowContext(ctx, `SELECT digest FROM tags WHERE repo = ? AND tag = ?`, repo, tag).Scan(&d)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return digest.Digest(d), err
}

// Get returns one manifest, or ok=false.
func (x *Index) Get(ctx context.Context, repo string, d digest.Digest) (Manifest, bool, error) {
	row := x.db.QueryRowContext(ctx, `SELECT media_type, artifact_type, size, subject, annotations FROM manifests WHERE repo = ? AND digest = ?`, repo, d.String())
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
	rows, err := x.db.QueryContext(ctx, q, args...)
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
	rows, err := x.db.QueryContext(ctx, q, args...)
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

// ReplaceRepo swaps a repository's whole content for what storage holds,
// in one transaction, and clears its pending writes. records maps each
// promotion or lineage record manifest to its layer's bytes.
func (x *Index) ReplaceRepo(ctx context.Context, repo string, manifests []Manifest, tags map[string]digest.Digest, records map[digest.Digest][]byte) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, table := range []string{"manifests", "tags", "pending", "versions", "version_metrics", "version_props", "promotions", "lineage"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE repo = ?`, repo); err != nil {
			return err
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, m := range manifests {
		if err := putManifest(ctx, tx, m, now); err != nil {
			return err
		}
	}
	for t, d := range tags {
		if err := putTag(ctx, tx, repo, t, d); err != nil {
			return err
		}
	}
	for _, m := range manifests {
		if body, ok := records[m.Digest]; ok {
			if err := putRecord(ctx, tx, m, body); err != nil {
				return err
			}
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
	rows, err := x.db.QueryContext(ctx, `SELECT 'm', repo, digest, media_type || '|' || artifact_type || '|' || size || '|' || subject || '|' || annotations FROM manifests
		UNION ALL SELECT 't', repo, tag, digest || '|' || kind FROM tags
		UNION ALL SELECT 'v', repo, digest, created || '|' || framework || '|' || description || '|' || size || '|' || files FROM versions
		UNION ALL SELECT 'vm', repo, digest || ' ' || key, value FROM version_metrics
		UNION ALL SELECT 'vp', repo, digest || ' ' || kind || ' ' || key, value FROM version_props
		UNION ALL SELECT 'p', repo, record, stage || '|' || digest || '|' || time || '|' || body FROM promotions
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
