package index

import (
	"context"
	"fmt"
	"strings"
)

// copied are the tables CopyState copies: the state tables (what storage
// cannot give again) and the two caches a rebuild keeps and that only
// reading every weights blob again would give (tar layer digests, and the
// image views built, by digest).
var copied = []struct {
	table, columns string
	// serial is the identity column whose sequence PostgreSQL must move
	// past the copied rows.
	serial string
}{
	{"outbox_events", "seq, id, type, repo, subject, time, data", "seq"},
	{"outbox_cursors", "subscription, seq", ""},
	{"outbox_deliveries", "id, subscription, event, state, attempts, next_attempt, last_status, last_error, updated", "id"},
	{"robots", "name, secret_hash, grant_json, description, created, created_by, expires, revoked, last_used", ""},
	{"tar_digests", "raw, path, mode, size, tar", ""},
	{"views", "repo, digest, kind, version", ""},
}

// CopyReport counts the rows CopyState copied, per table.
type CopyReport map[string]int

// CopyState copies what a rebuild from storage cannot give again from x
// into dst (an index moving from SQLite to PostgreSQL: `modelreg index
// migrate`), in one transaction, and marks dst for a rebuild from storage,
// which the server does at its next start: the manifests, tags, versions
// and promotion histories come from storage, the one source of truth,
// rather than from a copy that may lag it. dst must hold no events and no
// robots: state is never merged.
func (x *Index) CopyState(ctx context.Context, dst *Index) (CopyReport, error) {
	for _, t := range []string{"outbox_events", "robots"} {
		var n int
		if err := dst.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, fmt.Errorf("the target index already holds %d rows in %s: migrate into a new, empty database (state is never merged)", n, t)
		}
	}
	tx, err := dst.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	report := CopyReport{}
	for _, c := range copied {
		cols := strings.Split(c.columns, ", ")
		rows, err := x.rd.QueryContext(ctx, `SELECT `+c.columns+` FROM `+c.table)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", c.table, err)
		}
		insert := `INSERT INTO ` + c.table + ` (` + c.columns + `) VALUES (` + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + `) ON CONFLICT DO NOTHING`
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			for i, v := range vals {
				if b, ok := v.([]byte); ok {
					vals[i] = string(b) // SQLite may give text as bytes
				}
			}
			if _, err := tx.ExecContext(ctx, insert, vals...); err != nil {
				rows.Close()
				return nil, fmt.Errorf("writing %s: %w", c.table, err)
			}
			report[c.table]++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if c.serial != "" && dst.d.postgres {
			if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+c.table+`', '`+c.serial+`'), COALESCE(MAX(`+c.serial+`), 0) + 1, false) FROM `+c.table); err != nil {
				return nil, err
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('rebuild', 'needed') ON CONFLICT (key) DO UPDATE SET value = excluded.value`); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	dst.stale = true
	return report, nil
}
