-- The index's first versioned schema: schema 4 of the index from before
-- versioned migrations, which it adopts as it is (every statement is IF
-- NOT EXISTS). See README.md for the rules of later migrations.
-- +goose Up
-- State tables: never dropped, only migrated.

CREATE TABLE IF NOT EXISTS outbox_events (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	id      TEXT NOT NULL UNIQUE,
	type    TEXT NOT NULL,
	repo    TEXT NOT NULL,
	subject TEXT NOT NULL DEFAULT '',
	time    INTEGER NOT NULL, -- unix nanoseconds
	data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_events_time ON outbox_events (time);
-- Per subscription, the last event fanned out into deliveries.
CREATE TABLE IF NOT EXISTS outbox_cursors (
	subscription TEXT PRIMARY KEY,
	seq          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_deliveries (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	subscription TEXT NOT NULL,
	event        INTEGER NOT NULL, -- outbox_events.seq
	state        TEXT NOT NULL,    -- pending, delivered or dead
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL, -- unix nanoseconds
	last_status  INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT '',
	updated      INTEGER NOT NULL,
	UNIQUE (subscription, event)
);
CREATE INDEX IF NOT EXISTS outbox_deliveries_due ON outbox_deliveries (state, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_deliveries_event ON outbox_deliveries (event);

CREATE TABLE IF NOT EXISTS robots (
	name        TEXT PRIMARY KEY,
	secret_hash TEXT NOT NULL,
	grant_json  TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	created     INTEGER NOT NULL,
	created_by  TEXT NOT NULL DEFAULT '',
	expires     INTEGER NOT NULL DEFAULT 0, -- unix nanoseconds, 0 never
	revoked     INTEGER NOT NULL DEFAULT 0, -- unix nanoseconds, 0 not revoked
	last_used   INTEGER NOT NULL DEFAULT 0
);
-- Cache tables: what storage can give again.

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
-- this index, without it, one row lookup per version (11 ms a page of 100
-- models at 100,000 versions, 1.5 ms with it).
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
-- chain), records a client wrote are kept with trusted = 0 and never count.
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
-- only reading the raw blob once can give, and the views built, so one
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
-- weights.NAME in searches, key '_derived' marks a version read (with or
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
-- A new index (or one whose cache tables a migration recreated, or one
-- from before versioned migrations dropped for its old schema) holds
-- nothing yet: it must be rebuilt from storage. An index of schema 4 from
-- before versioned migrations keeps its rows.
INSERT INTO meta (key, value) SELECT 'rebuild', 'needed' WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'schema');
INSERT INTO meta (key, value) VALUES ('schema', '4') ON CONFLICT (key) DO NOTHING;
