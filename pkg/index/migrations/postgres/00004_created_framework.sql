-- +goose Up
-- The walk newest first (or oldest) reads this index alone, framework
-- included, so a search on the framework checks it without reading each
-- version's row: at 1,000,000 versions, "labels.team = 'team-07' and
-- framework = 'pytorch'" walked 19,295 versions through rows. It replaces
-- versions_created, its prefix. A cache table's index: nothing to rebuild.
CREATE INDEX IF NOT EXISTS versions_created_framework ON versions (created, repo, digest, framework);
DROP INDEX IF EXISTS versions_created;
