package index

import (
	"context"
	"database/sql"
	"hash/fnv"
	"strconv"
	"strings"
	"sync/atomic"
)

// dialect is what differs between the two databases the index runs on.
// Queries are written once, in the SQL both accept, with "?" for
// parameters; the dialect rebinds them ("$1" on PostgreSQL) and supplies
// the few expressions the two spell differently. The rules that make both
// answer alike (documented in docs/server.md, "The index"):
//
//   - text compares and sorts by bytes: SQLite's BINARY collation, and
//     COLLATE "C" on every text column of the PostgreSQL schema, so paging
//     by name (repo > ?) and ORDER BY agree whatever the database's locale;
//   - like is case-sensitive, with % and _ as its only wildcards and no
//     escape character: GLOB on SQLite (whose LIKE folds ASCII case),
//     LIKE ... ESCAPE ” on PostgreSQL (whose LIKE escapes with a backslash);
//   - integers are 64-bit (BIGINT), reals are doubles (DOUBLE PRECISION).
type dialect struct {
	postgres bool
	// alias is the table whose repo and digest columns name the version
	// a row condition checks (compileRow), "v" (versions) when empty;
	// wide, that it has the version's created and framework columns too.
	alias string
	wide  bool
}

// key is the alias of the version's repo and digest columns.
func (d dialect) key() string {
	if d.alias == "" {
		return "v"
	}
	return d.alias
}

// rebind turns the "?" parameters of q into PostgreSQL's "$n", skipping
// quoted strings and identifiers.
func (d dialect) rebind(q string) string {
	if !d.postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// like renders "col matches pattern" with the index's like rules: %
// matches any run of characters, _ one character, every other character
// itself, case-sensitive.
func (d dialect) like(col, pattern string) (string, any) {
	if d.postgres {
		return col + " LIKE ? ESCAPE ''", pattern
	}
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '%':
			b.WriteByte('*')
		case '_':
			b.WriteByte('?')
		case '*', '?', '[':
			b.WriteByte('[')
			b.WriteRune(r)
			b.WriteByte(']')
		default:
			b.WriteRune(r)
		}
	}
	return col + " GLOB ?", b.String()
}

// endsWith renders "col ends with the literal s".
func (d dialect) endsWith(col, s string) (string, any) {
	if d.postgres {
		r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
		return col + ` LIKE ? ESCAPE '\'`, "%" + r.Replace(s)
	}
	r := strings.NewReplacer(`*`, `[*]`, `?`, `[?]`, `[`, `[[]`)
	return col + " GLOB ?", "*" + r.Replace(s)
}

// noIndex keeps SQLite's planner from using an index for col (a unary
// plus), where a scan in another index's order is the better plan.
// PostgreSQL has no unary plus on text, and plans by statistics.
func (d dialect) noIndex(col string) string {
	if d.postgres {
		return col
	}
	return "+" + col
}

// perRow ends an EXISTS subquery that must stay a check of one row at
// a time. compileRow's conditions are meant to run per row of a walk that
// stops at the limit; PostgreSQL turns a plain EXISTS into a semi-join,
// whose size it estimates from the two join columns as if independent
// (repository and digest are not: a digest names one version), finds a
// handful of rows, and joins whole tables to sort them (806 ms at
// 1,000,000 versions, where the walk took 0.7 ms). OFFSET 0 keeps the
// subquery a per-row check; SQLite runs EXISTS per row already.
func (d dialect) perRow() string {
	if d.postgres {
		return " OFFSET 0"
	}
	return ""
}

// versionsOf joins each row of another table or set (alias at, with
// repo and digest columns) with its versions row v, keeping at the outer
// loop, one lookup per row, so a LIMIT stops a walk and a small set reads
// only its own versions: SQLite's CROSS JOIN (its planner never reorders
// one); on PostgreSQL a lateral subquery it cannot flatten, since as a
// plain join it misestimates both ways (repository and digest taken as
// independent: a handful of rows, where a walk hashed all 1,000,000
// versions, 780 ms against 35; an intersection of 99 versions estimated
// at 203,768, joined by reading every version, 820 ms).
func (d dialect) versionsOf(at string) string {
	if d.postgres {
		return "CROSS JOIN LATERAL (SELECT * FROM versions x WHERE x.repo = " + at + ".repo AND x.digest = " + at + ".digest OFFSET 0) v"
	}
	return "CROSS JOIN versions v ON v.repo = " + at + ".repo AND v.digest = " + at + ".digest"
}

// stageTags names the tags table (alias t) for a check of one version's
// stages, which the partial index tags_stage answers in one lookup.
// PostgreSQL picks it by itself; SQLite prefers the primary key (repo,
// tag), then reads the row for its digest: 35 ms for a walk of 10,644
// versions at 1,000,000, 6.5 ms through tags_stage.
func (d dialect) stageTags() string {
	if d.postgres {
		return "tags t"
	}
	return "tags t INDEXED BY tags_stage"
}

// lockKey is the 64-bit key of a PostgreSQL advisory lock: FNV-1a of a
// namespace and the names it locks, so locks of different kinds never
// share a key by construction of their names.
func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int64(h.Sum64())
}

// Lock namespaces.
const (
	// lockRepoRows is held (per transaction) by every write that changes a
	// repository's rows and by its rebuild, so a rebuild on one replica
	// never interleaves with a write on another.
	lockRepoRows = "modelreg/index/repo"
	// lockOutbox serializes the transactions that add events, so the
	// outbox's seq order is its commit order (Fanout reads "seq > cursor").
	lockOutbox = "modelreg/index/outbox"
	// lockRebuild is held (per session) by the replica rebuilding the
	// whole index.
	lockRebuild = "modelreg/index/rebuild"
	// lockGate names the gate's locks: a repository's (shared by its tag
	// writes, exclusive for a delete by digest) and one tag's.
	lockGate = "modelreg/gate"
	// lockLeader names the locks of jobs one replica runs for all (the
	// event dispatcher).
	lockLeader = "modelreg/leader"
)

// writer is the index's writing side. Every write goes through it, so
// every write that may have changed the index advances gen after it
// commits (Generation). On SQLite it is one connection (writes queue in
// Go, in order and cancellable, instead of spinning on the busy handler;
// transactions begin IMMEDIATE); on PostgreSQL it shares the pool with
// the readers.
type writer struct {
	*sql.DB
	d   dialect
	gen *atomic.Uint64
	// notify, on PostgreSQL, tells the other replicas that the index
	// changed (see listen).
	notify func(ctx context.Context)
}

func (w writer) wrote(ctx context.Context) {
	w.gen.Add(1)
	if w.notify != nil {
		w.notify(ctx)
	}
}

func (w writer) Exec(q string, args ...any) (sql.Result, error) {
	return w.ExecContext(context.Background(), q, args...)
}

func (w writer) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	defer w.wrote(context.WithoutCancel(ctx))
	return w.DB.ExecContext(ctx, w.d.rebind(q), args...)
}

func (w writer) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return w.DB.QueryContext(ctx, w.d.rebind(q), args...)
}

func (w writer) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return w.DB.QueryRowContext(ctx, w.d.rebind(q), args...)
}

// insertID runs an INSERT ... RETURNING id (pgx has no LastInsertId).
func (w writer) insertID(ctx context.Context, q string, args ...any) (int64, error) {
	defer w.wrote(context.WithoutCancel(ctx))
	var id int64
	err := w.DB.QueryRowContext(ctx, w.d.rebind(q+" RETURNING id"), args...).Scan(&id)
	return id, err
}

// BeginTx begins a write transaction. On PostgreSQL it is READ COMMITTED,
// as every statement of the index's transactions is either keyed by a
// lock the transaction holds (the repository's, the outbox's) or an
// idempotent upsert.
func (w writer) BeginTx(ctx context.Context, opts *sql.TxOptions) (wtx, error) {
	tx, err := w.DB.BeginTx(ctx, opts)
	return wtx{Tx: tx, w: w}, err
}

// wtx is a write transaction: its commit advances the writer's gen.
type wtx struct {
	*sql.Tx
	w writer
}

func (t wtx) Commit() error {
	defer t.w.wrote(context.Background())
	return t.Tx.Commit()
}

func (t wtx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.w.d.rebind(q), args...)
}

func (t wtx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.w.d.rebind(q), args...)
}

func (t wtx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.w.d.rebind(q), args...)
}

// lock takes a transaction-scoped advisory lock on PostgreSQL (released
// at commit or rollback); on SQLite, whose writer is one connection, the
// transaction already excludes every other write.
func (t wtx) lock(ctx context.Context, parts ...string) error {
	if !t.w.d.postgres {
		return nil
	}
	_, err := t.Tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(parts...))
	return err
}

// lockRepo takes the repository's row lock (lockRepoRows).
func (t wtx) lockRepo(ctx context.Context, repo string) error {
	return t.lock(ctx, lockRepoRows, repo)
}

// reader is the readers' pool, rebinding queries.
type reader struct {
	*sql.DB
	d dialect
}

func (r reader) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return r.DB.QueryContext(ctx, r.d.rebind(q), args...)
}

func (r reader) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return r.DB.QueryRowContext(ctx, r.d.rebind(q), args...)
}

func (r reader) dia() dialect { return r.d }

// BeginTx begins a read transaction. On PostgreSQL it is REPEATABLE READ
// READ ONLY: the queries of one request all see one snapshot, as they do
// in SQLite's WAL mode.
func (r reader) BeginTx(ctx context.Context) (rtx, error) {
	opts := &sql.TxOptions{ReadOnly: r.d.postgres}
	if r.d.postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := r.DB.BeginTx(ctx, opts)
	return rtx{Tx: tx, d: r.d}, err
}

// rtx is a read transaction, rebinding queries.
type rtx struct {
	*sql.Tx
	d dialect
}

func (t rtx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.rebind(q), args...)
}

func (t rtx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.rebind(q), args...)
}

func (t rtx) dia() dialect { return t.d }

func (t wtx) dia() dialect { return t.w.d }
