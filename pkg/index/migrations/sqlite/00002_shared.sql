-- +goose Up
-- What every replica must agree on (the digests of the trust and access
-- policies each enforces): a state table, kept across rebuilds.
CREATE TABLE IF NOT EXISTS shared (
	key     TEXT PRIMARY KEY,
	value   TEXT NOT NULL,
	writer  TEXT NOT NULL DEFAULT '',
	updated INTEGER NOT NULL
);
