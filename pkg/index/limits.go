package index

import (
	"context"
	"database/sql"
	"errors"

	"github.com/opencontainers/go-digest"
)

// ManifestDigests lists the manifests the index holds for repo: what a
// storage quota counts the blobs of (docs/server.md, "Limits").
func (x *Index) ManifestDigests(ctx context.Context, repo string) ([]digest.Digest, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT digest FROM manifests WHERE repo = ?`, repo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []digest.Digest
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, digest.Digest(d))
	}
	return out, rows.Err()
}

// ReferrerCount counts the manifests of repo whose subject is subject,
// for the cap on referrers per subject.
func (x *Index) ReferrerCount(ctx context.Context, repo string, subject digest.Digest) (int, error) {
	var n int
	err := x.rd.QueryRowContext(ctx, `SELECT count(*) FROM manifests WHERE repo = ? AND subject = ?`, repo, subject.String()).Scan(&n)
	return n, err
}

// HasManifest reports whether the index holds manifest d of repo.
func (x *Index) HasManifest(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	var one int
	err := x.rd.QueryRowContext(ctx, `SELECT 1 FROM manifests WHERE repo = ? AND digest = ?`, repo, d.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
