-- +goose Up
-- What every replica must agree on (the digests of the trust and access
-- policies each enforces): a state table, kept across rebuilds.
CREATE TABLE IF NOT EXISTS shared (
	key     TEXT COLLATE "C" PRIMARY KEY,
	value   TEXT COLLATE "C" NOT NULL,
	writer  TEXT COLLATE "C" NOT NULL DEFAULT '',
	updated BIGINT NOT NULL
);
