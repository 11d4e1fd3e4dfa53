package index

import (
	"context"
	"database/sql"
	"errors"

	"github.com/opencontainers/go-digest"
)

// Held is one model version as retention sees it: what names it now and
// what its history and lineage say.
type Held struct {
	Repo   string
	Digest digest.Digest
	// Versions and Stages are the tags pointing at it now.
	Versions, Stages []string
	// EverIn are the stages its trusted history says it entered.
	EverIn []string
	// Inputs are the digests of its lineage inputs.
	Inputs []string
}

// HeldVersions lists every model version with its tags, the stages it
// ever entered (trusted records only: a client cannot keep a version
// alive, or let it go, by pushing a record) and its lineage inputs, read
// in one snapshot.
func (x *Index) HeldVersions(ctx context.Context) ([]Held, error) {
	var out []Held
	err := x.snapshot(ctx, func(db querier) error {
		at := map[string]int{}
		rows, err := db.QueryContext(ctx, `SELECT repo, digest FROM versions ORDER BY repo, digest`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var h Held
			if err := rows.Scan(&h.Repo, &h.Digest); err != nil {
				rows.Close()
				return err
			}
			at[h.Repo+"@"+h.Digest.String()] = len(out)
			out = append(out, h)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		each := func(q string, add func(h *Held, v string)) error {
			rows, err := db.QueryContext(ctx, q)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var repo, dg, v string
				if err := rows.Scan(&repo, &dg, &v); err != nil {
					return err
				}
				if i, ok := at[repo+"@"+dg]; ok {
					add(&out[i], v)
				}
			}
			return rows.Err()
		}
		if err := each(`SELECT repo, digest, tag FROM tags WHERE kind = 'version' ORDER BY tag`, func(h *Held, v string) { h.Versions = append(h.Versions, v) }); err != nil {
			return err
		}
		if err := each(`SELECT repo, digest, tag FROM tags WHERE kind = 'stage' ORDER BY tag`, func(h *Held, v string) { h.Stages = append(h.Stages, v) }); err != nil {
			return err
		}
		if err := each(`SELECT DISTINCT repo, digest, stage FROM promotions WHERE trusted = 1 AND digest != '' ORDER BY stage`, func(h *Held, v string) { h.EverIn = append(h.EverIn, v) }); err != nil {
			return err
		}
		return each(`SELECT DISTINCT repo, digest, input_digest FROM lineage WHERE input_digest != '' ORDER BY input_digest`, func(h *Held, v string) { h.Inputs = append(h.Inputs, v) })
	})
	return out, err
}

// Tombstoned returns the tombstone that retired a version tag of digest d
// in repo ("" when none did): the digest was deleted by this registry.
func (x *Index) Tombstoned(ctx context.Context, repo string, d digest.Digest) (string, error) {
	var t string
	err := x.rd.QueryRowContext(ctx, `SELECT tombstone FROM retired WHERE repo = ? AND digest = ? ORDER BY tombstone LIMIT 1`, repo, d.String()).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return t, err
}
