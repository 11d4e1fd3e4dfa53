package index

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"time"
)

// Session locks for replicas. On PostgreSQL each is an advisory lock held
// by one pooled connection until the returned unlock runs, so it spans
// storage writes and several index transactions, and is released by the
// database if the process dies. On SQLite, one process owns the index, so
// they lock nothing (the server's process-local locks are enough).

// LockRebuild is held by the replica that checks and rebuilds the whole
// index (or repairs it) at start-up: replicas starting together rebuild
// once. After taking it, NeedsRebuild tells whether another did it.
func (x *Index) LockRebuild(ctx context.Context) (unlock func(), err error) {
	return x.sessionLock(ctx, advisory{key: lockKey(lockRebuild)})
}

// NeedsRebuild re-reads whether the index must be rebuilt from storage
// (Stale at Open time), for a replica that waited for LockRebuild.
func (x *Index) NeedsRebuild(ctx context.Context) (bool, error) {
	var v string
	err := x.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'rebuild'`).Scan(&v)
	switch {
	case err == nil:
		x.stale = true
	case errors.Is(err, sql.ErrNoRows):
		x.stale = false
	default:
		return false, err
	}
	return x.stale, nil
}

// LockTag serializes the writes to one tag of a repository across
// replicas (a stage move: verification, record, tag, index), beside the
// gate's process-local lock. It shares the repository's gate lock with
// the other tags' writes; LockTags takes that alone.
func (x *Index) LockTag(ctx context.Context, repo, tag string) (unlock func(), err error) {
	return x.sessionLock(ctx, advisory{key: lockKey(lockGate, repo), shared: true}, advisory{key: lockKey(lockGate, repo, tag)})
}

// LockTags excludes every tag write of a repository across replicas (a
// delete by digest, which removes every tag pointing at it).
func (x *Index) LockTags(ctx context.Context, repo string) (unlock func(), err error) {
	return x.sessionLock(ctx, advisory{key: lockKey(lockGate, repo)})
}

// advisory is one advisory lock to take.
type advisory struct {
	key    int64
	shared bool
}

// sessionLock takes locks, in order, on one connection of the pool.
func (x *Index) sessionLock(ctx context.Context, locks ...advisory) (func(), error) {
	if !x.d.postgres {
		return func() {}, nil
	}
	conn, err := x.db.DB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	unlock := func(n int) {
		bg := context.WithoutCancel(ctx)
		for i := n - 1; i >= 0; i-- {
			q := `SELECT pg_advisory_unlock($1)`
			if locks[i].shared {
				q = `SELECT pg_advisory_unlock_shared($1)`
			}
			if _, err := conn.ExecContext(bg, q, locks[i].key); err != nil {
				// The lock's fate is unknown: drop the connection, which
				// releases every lock it holds.
				conn.Raw(func(any) error { return driver.ErrBadConn })
				break
			}
		}
		conn.Close()
	}
	for i, l := range locks {
		q := `SELECT pg_advisory_lock($1)`
		if l.shared {
			q = `SELECT pg_advisory_lock_shared($1)`
		}
		if _, err := conn.ExecContext(ctx, q, l.key); err != nil {
			unlock(i)
			return nil, err
		}
	}
	return func() { unlock(len(locks)) }, nil
}

// TryLead makes this process the one replica that runs job (the event
// dispatcher: deliveries are sent by one replica, in order, not raced by
// several) when no other holds it. It does not wait: ok is false while
// another replica leads; the lock is the database's, released when the
// leader's session ends (release, or the process dies), so a surviving
// replica takes over at its next try. On SQLite it always leads.
func (x *Index) TryLead(ctx context.Context, job string) (release func(), ok bool, err error) {
	if !x.d.postgres {
		return func() {}, true, nil
	}
	conn, err := x.db.DB.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	key := lockKey(lockLeader, job)
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
		conn.Close()
		return nil, false, err
	}
	return func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, true, nil
}

// Publish records value under key as what every replica must agree on
// (the trust policy's digest), written by this replica (by).
func (x *Index) Publish(ctx context.Context, key, value, by string) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO shared (key, value, writer, updated) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, writer = excluded.writer, updated = excluded.updated`,
		key, value, by, time.Now().UnixNano())
	return err
}

// Shared returns what was last published under key, and by whom ("" when
// nothing was).
func (x *Index) Shared(ctx context.Context, key string) (value, by string, err error) {
	err = x.db.QueryRowContext(ctx, `SELECT value, writer FROM shared WHERE key = ?`, key).Scan(&value, &by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return value, by, err
}

// Agreed lists the distinct values published, within the last fresh,
// under keys starting with prefix: one value when every live replica
// agrees (each publishes under prefix + its own id, as a heartbeat).
func (x *Index) Agreed(ctx context.Context, prefix string, fresh time.Duration) (map[string][]string, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT key, value FROM shared WHERE substr(key, 1, ?) = ? AND updated > ?`,
		len(prefix), prefix, time.Now().Add(-fresh).UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[v] = append(out[v], k[len(prefix):])
	}
	return out, rows.Err()
}

// Unpublish removes what was published under key.
func (x *Index) Unpublish(ctx context.Context, key string) error {
	_, err := x.db.ExecContext(ctx, `DELETE FROM shared WHERE key = ?`, key)
	return err
}
