package index

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Robot accounts (the robots table, migrations/) are state no storage
// can give again, so, like the outbox, their table is never dropped by a
// rebuild or a schema change. Secrets are kept as their SHA-256: they are
// 32 random bytes, so a slow hash adds nothing, and a leaked database
// gives no usable secret.

// Robot is a robot account as the index keeps it.
type Robot struct {
	Name        string
	SecretHash  string
	Grant       json.RawMessage
	Description string
	Created     time.Time
	CreatedBy   string
	Expires     time.Time // zero: never
	Revoked     time.Time // zero: not revoked
	LastUsed    time.Time
}

// ErrRobotExists means a robot of that name exists (revoked or not: names
// are never reused, so logs and records keep meaning one account).
var ErrRobotExists = errors.New("a robot account of that name exists")

// PutRobot creates a robot account.
func (x *Index) PutRobot(ctx context.Context, r Robot) error {
	// One statement, so two replicas creating one name cannot both succeed.
	res, err := x.db.ExecContext(ctx, `INSERT INTO robots (name, secret_hash, grant_json, description, created, created_by, expires) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO NOTHING`,
		r.Name, r.SecretHash, string(r.Grant), r.Description, r.Created.UnixNano(), r.CreatedBy, nanos(r.Expires))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrRobotExists
	}
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// GetRobot returns a robot account, or ok=false.
func (x *Index) GetRobot(ctx context.Context, name string) (Robot, bool, error) {
	rs, err := x.robots(ctx, `WHERE name = ?`, name)
	if err != nil || len(rs) == 0 {
		return Robot{}, false, err
	}
	return rs[0], true, nil
}

// Robots lists every robot account, by name.
func (x *Index) Robots(ctx context.Context) ([]Robot, error) {
	return x.robots(ctx, `ORDER BY name`)
}

func (x *Index) robots(ctx context.Context, where string, args ...any) ([]Robot, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT name, secret_hash, grant_json, description, created, created_by, expires, revoked, last_used FROM robots `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Robot{}
	for rows.Next() {
		var r Robot
		var grant string
		var created, expires, revoked, used int64
		if err := rows.Scan(&r.Name, &r.SecretHash, &grant, &r.Description, &created, &r.CreatedBy, &expires, &revoked, &used); err != nil {
			return nil, err
		}
		r.Grant = json.RawMessage(grant)
		r.Created, r.Expires, r.Revoked, r.LastUsed = fromNanos(created), fromNanos(expires), fromNanos(revoked), fromNanos(used)
		out = append(out, r)
	}
	return out, rows.Err()
}

// RevokeRobot revokes a robot account from now; it reports whether the
// account exists and was not revoked before.
func (x *Index) RevokeRobot(ctx context.Context, name string) (bool, error) {
	res, err := x.db.ExecContext(ctx, `UPDATE robots SET revoked = ? WHERE name = ? AND revoked = 0`, time.Now().UnixNano(), name)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// RobotUsed notes that a robot authenticated (at most about once a
// minute per robot: callers decide), for `modelreg robot list`.
func (x *Index) RobotUsed(ctx context.Context, name string, t time.Time) error {
	_, err := x.db.ExecContext(ctx, `UPDATE robots SET last_used = ? WHERE name = ?`, t.UnixNano(), name)
	return err
}
