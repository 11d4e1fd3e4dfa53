-- +goose Up
-- Stage tags alone, by version: a search that walks an index (newest
-- first, or a metric's order) checks "is this version in that stage" per
-- row, and the (kind, tag, repo, digest) index holds every version tag
-- too (1,000,000 entries at 1,000,000 versions, four levels deep); this
-- one holds a few per model. A cache table's index: nothing to rebuild.
CREATE INDEX IF NOT EXISTS tags_stage ON tags (repo, digest, tag) WHERE kind = 'stage';
