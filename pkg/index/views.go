package index

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"

	"github.com/opencontainers/go-digest"
)

// TarLayer is what the server needs to serve an image view's tar layer
// without a copy: the raw blob it wraps and the header's path and mode.
type TarLayer struct {
	Raw  digest.Digest
	Path string
	Mode fs.FileMode
	Size int64
	Tar  digest.Digest
}

// TarDigest returns the tar layer digest recorded for a raw blob at path
// with mode; ok is false when it was never computed.
func (x *Index) TarDigest(ctx context.Context, raw digest.Digest, path string, mode fs.FileMode) (d digest.Digest, ok bool, err error) {
	var s string
	err = x.rd.QueryRowContext(ctx, `SELECT tar FROM tar_digests WHERE raw = ? AND path = ? AND mode = ?`, raw.String(), path, int64(mode)).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return digest.Digest(s), err == nil, err
}

// PutTarDigest records a computed tar layer digest.
func (x *Index) PutTarDigest(ctx context.Context, l TarLayer) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO tar_digests (raw, path, mode, size, tar) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		l.Raw.String(), l.Path, int64(l.Mode), l.Size, l.Tar.String())
	return err
}

// TarLayers returns the layers recorded under a tar digest (one content
// can be several files' layers only if path, mode and bytes all agree, so
// any of them serves; several are returned for the caller to pick one its
// repository holds).
func (x *Index) TarLayers(ctx context.Context, tar digest.Digest) ([]TarLayer, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT raw, path, mode, size FROM tar_digests WHERE tar = ?`, tar.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []TarLayer
	for rows.Next() {
		var l TarLayer
		var raw string
		var mode int64
		if err := rows.Scan(&raw, &l.Path, &mode, &l.Size); err != nil {
			return nil, err
		}
		l.Raw, l.Mode, l.Tar = digest.Digest(raw), fs.FileMode(mode), tar
		out = append(out, l)
	}
	return out, rows.Err()
}

// PutView records the pieces of the image view of the version of repo
// (digest to kind: index, manifest or config), so each can be found by
// its digest.
func (x *Index) PutView(ctx context.Context, repo string, version digest.Digest, pieces map[digest.Digest]string) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for d, kind := range pieces {
		if _, err := tx.ExecContext(ctx, `INSERT INTO views (repo, digest, kind, version) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			repo, d.String(), kind, version.String()); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// ViewOf returns the version whose image view has a piece (index,
// manifest or config) with digest d in repo, and the piece's kind; ok is
// false when no view built here has it.
func (x *Index) ViewOf(ctx context.Context, repo string, d digest.Digest) (version digest.Digest, kind string, ok bool, err error) {
	var v string
	err = x.rd.QueryRowContext(ctx, `SELECT version, kind FROM views WHERE repo = ? AND digest = ?`, repo, d.String()).Scan(&v, &kind)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	return digest.Digest(v), kind, err == nil, err
}

// ViewIndexOf returns the digest of the image view built for the version
// of repo; ok is false when none was built yet.
func (x *Index) ViewIndexOf(ctx context.Context, repo string, version digest.Digest) (d digest.Digest, ok bool, err error) {
	var s string
	err = x.rd.QueryRowContext(ctx, `SELECT digest FROM views WHERE repo = ? AND version = ? AND kind = 'index' LIMIT 1`, repo, version.String()).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return digest.Digest(s), err == nil, err
}

// ModelTags lists a repository's version and stage tags that point at
// model versions, sorted: the tags its derived repositories (image views,
// modelcars) serve.
func (x *Index) ModelTags(ctx context.Context, repo string) ([]string, error) {
	out, err := x.strings(ctx, `SELECT t.tag FROM tags t JOIN versions v ON v.repo = t.repo AND v.digest = t.digest
		WHERE t.repo = ? AND t.kind IN ('version', 'stage') ORDER BY t.tag`, repo)
	if out == nil {
		out = []string{}
	}
	return out, err
}
