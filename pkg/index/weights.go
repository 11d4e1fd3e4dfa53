package index

import (
	"context"
	"database/sql"

	"github.com/modelreg/modelreg/pkg/weights"
	"github.com/opencontainers/go-digest"
)

// derivedKey marks a version whose weights files were read.
const derivedKey = "_derived"

// PutWeights records what the headers of a version's weights files say
// (f nil: it has none the server reads), replacing what was recorded.
func (x *Index) PutWeights(ctx context.Context, repo string, d digest.Digest, f *weights.Facts) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lockRepo(ctx, repo); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM version_weights WHERE repo = ? AND digest = ?`, repo, d.String()); err != nil {
		return err
	}
	put := func(key string, num any, str any) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO version_weights (repo, digest, key, num, str) VALUES (?, ?, ?, ?, ?)`, repo, d.String(), key, num, str)
		return err
	}
	if err := put(derivedKey, nil, nil); err != nil {
		return err
	}
	if f != nil {
		rows := []weightRow{{"parameters", f.Parameters, nil}, {"tensors", f.Tensors, nil}, {"format", nil, f.Format}}
		if f.ContextLength > 0 {
			rows = append(rows, weightRow{"context_length", f.ContextLength, nil})
		}
		for _, kv := range [][2]string{{"architecture", f.Architecture}, {"quantization", f.Quantization}} {
			if kv[1] != "" {
				rows = append(rows, weightRow{kv[0], nil, kv[1]})
			}
		}
		for _, dt := range f.DTypes {
			rows = append(rows, weightRow{"dtype", nil, dt})
		}
		for _, r := range rows {
			if err := put(r.key, r.num, r.str); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

// weightRow is one row of version_weights: a number or a string.
type weightRow struct {
	key      string
	num, str any
}

// Underived lists up to limit model versions whose weights were not read
// yet (pushed before the server read them, or after an index rebuild).
func (x *Index) Underived(ctx context.Context, limit int) ([][2]string, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT v.repo, v.digest FROM versions v WHERE NOT EXISTS
		(SELECT 1 FROM version_weights w WHERE w.repo = v.repo AND w.digest = v.digest AND w.key = ?) LIMIT ?`, derivedKey, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var r [2]string
		if err := rows.Scan(&r[0], &r[1]); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// fillWeights adds the weights facts to rows (in, keys select them).
func fillWeights(ctx context.Context, db querier, in string, keys []any, at map[string]*VersionRow) error {
	wq, err := db.QueryContext(ctx, `SELECT repo, digest, key, num, str FROM version_weights WHERE key != '`+derivedKey+`' AND `+in, keys...)
	if err != nil {
		return err
	}
	defer wq.Close()
	for wq.Next() {
		var repo, dg, k string
		var num sql.NullFloat64
		var str sql.NullString
		if err := wq.Scan(&repo, &dg, &k, &num, &str); err != nil {
			return err
		}
		r := at[repo+"@"+dg]
		if r.Weights == nil {
			r.Weights = &weights.Facts{}
		}
		f := r.Weights
		switch k {
		case "parameters":
			f.Parameters = int64(num.Float64)
		case "tensors":
			f.Tensors = int64(num.Float64)
		case "context_length":
			f.ContextLength = int64(num.Float64)
		case "format":
			f.Format = str.String
		case "architecture":
			f.Architecture = str.String
		case "quantization":
			f.Quantization = str.String
		case "dtype":
			f.DTypes = append(f.DTypes, str.String)
		}
	}
	return wq.Err()
}

// PutDerivedLabels records labels read from a version's config (a KitOps
// Kitfile's package fields), beside the labels of its annotations, which
// win where both name a key.
func (x *Index) PutDerivedLabels(ctx context.Context, repo string, d digest.Digest, labels map[string]string) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lockRepo(ctx, repo); err != nil {
		return err
	}
	for k, v := range labels {
		if _, err := tx.ExecContext(ctx, `INSERT INTO version_props (repo, digest, kind, key, value) VALUES (?, ?, 'labels', ?, ?) ON CONFLICT DO NOTHING`,
			repo, d.String(), k, v); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// MarkAllRead records every version as having had its weights read, in
// one statement: for an index filled without blobs to read (benchmarks),
// so the server does not go through them in the background.
func (x *Index) MarkAllRead(ctx context.Context) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO version_weights (repo, digest, key) SELECT v.repo, v.digest, ? FROM versions v
		WHERE NOT EXISTS (SELECT 1 FROM version_weights w WHERE w.repo = v.repo AND w.digest = v.digest AND w.key = ?)`, derivedKey, derivedKey)
	return err
}
