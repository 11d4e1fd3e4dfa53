package index

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // pure-Go SQLite driver: no cgo
)

// migrations are the index's versioned schemas, one directory per
// database (migrations/README.md).
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// migrationsTable records which migrations an index has had.
const migrationsTable = "index_migrations"

// Backend names the database an index is kept in.
type Backend string

// The backends: SQLite, a file beside the data (one process), and
// PostgreSQL, shared by several replicas.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// ParseDSN tells which database a data source name names: "postgres://…"
// or "postgresql://…" is PostgreSQL (a pgx connection string), "sqlite:PATH"
// or a plain path is a SQLite file. It returns the backend and what its
// driver opens (the path, for SQLite).
func ParseDSN(dsn string) (Backend, string, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return Postgres, dsn, nil
	case strings.HasPrefix(dsn, "sqlite:"):
		dsn = strings.TrimPrefix(dsn, "sqlite:")
	case strings.Contains(dsn, "://"):
		return "", "", fmt.Errorf("index %q: name a SQLite file (sqlite:PATH) or a PostgreSQL database (postgres://USER@HOST/DB)", redact(dsn))
	}
	if dsn == "" {
		return "", "", errors.New("index: empty SQLite path: give sqlite:PATH")
	}
	return SQLite, dsn, nil
}

// redact hides a password in a URL for messages and logs.
func redact(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return dsn
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return dsn
	}
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		return scheme + "://" + user + ":xxxxx@" + host
	}
	return dsn
}

// Redact returns dsn with its password hidden, for logs.
func Redact(dsn string) string { return redact(dsn) }

// Open opens (creating and migrating if needed) the index named by dsn
// (ParseDSN). Stale reports whether it must be rebuilt from storage
// before it is trusted.
func Open(dsn string) (*Index, error) {
	backend, target, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if backend == Postgres {
		return openPostgres(target)
	}
	return openSQLite(target)
}

// Backend reports which database the index is kept in.
func (x *Index) Backend() Backend {
	if x.d.postgres {
		return Postgres
	}
	return SQLite
}

func openSQLite(path string) (*Index, error) {
	file := "file:" + filepath.ToSlash(path)
	db, err := sql.Open("sqlite", file+"?_txlock=immediate&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"+
		fmt.Sprintf("&_pragma=mmap_size(%d)", mmapBytes))
	if err != nil {
		return nil, err
	}
	// One writer at a time is SQLite's model: the pool holds exactly one
	// connection, kept open (it also keeps the WAL and its index in place
	// for the readers).
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	x := &Index{db: writer{DB: db, gen: new(atomic.Uint64)}}
	if err := x.init(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	// Readers open once the writer has made the schema and WAL mode.
	rd, err := sql.Open("sqlite", file+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=foreign_keys(1)"+
		fmt.Sprintf("&_pragma=cache_size(-%d)&_pragma=mmap_size(%d)", readerCacheKiB, mmapBytes))
	if err != nil {
		db.Close()
		return nil, err
	}
	// Idle connections are kept: database/sql keeps 2 by default, so under
	// load the others were closed and reopened (a new connection parses
	// the schema and starts with a cold page cache). Memory is bounded by
	// (readTurns()+2) * readerCacheKiB.
	turns := readTurns()
	rd.SetMaxOpenConns(turns + 2)
	rd.SetMaxIdleConns(turns + 2)
	rd.SetConnMaxIdleTime(0)
	rd.SetConnMaxLifetime(0)
	x.rd = reader{DB: rd}
	x.turns = make(chan struct{}, turns)
	return x, nil
}

// pgPoolSize bounds the PostgreSQL pool: the searches' turns, the write
// path, and one connection per stage move in flight (each holds its
// session lock on one, LockStage).
const pgPoolSize = 32

// pgTurns is how many searches run at once on PostgreSQL: the work is the
// database server's, so more than this process's cores, within the pool.
func pgTurns() int { return min(pgPoolSize/2, max(4, 2*readTurns())) }

// pgSessionParams are the settings each index connection asks for, unless
// the URL sets them. The searches are many small queries whose SQL the
// planner sees again and again with other values: a prepared statement's
// generic plan (which PostgreSQL switches to after five runs) knows
// neither the limit nor how many rows a range holds, and at 1,000,000
// versions it chose a full sort over an index walk that stops after 50
// rows (665 ms instead of under 1 ms). JIT compilation, worth it for
// analytics, added 48 ms to a query its cost estimate called large.
var pgSessionParams = map[string]string{"plan_cache_mode": "force_custom_plan", "jit": "off"}

func openPostgres(dsn string) (*Index, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", redact(dsn), err)
	}
	for k, v := range pgSessionParams {
		if _, set := cfg.RuntimeParams[k]; !set {
			cfg.RuntimeParams[k] = v
		}
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(pgPoolSize)
	db.SetMaxIdleConns(pgPoolSize / 2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: cannot reach PostgreSQL (is it running, and does the URL name its host, port, user and database?): %w", redact(dsn), err)
	}
	d := dialect{postgres: true}
	x := &Index{d: d, rd: reader{DB: db, d: d}, turns: make(chan struct{}, pgTurns())}
	x.db = writer{DB: db, d: d, gen: new(atomic.Uint64)}
	if err := x.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", redact(dsn), err)
	}
	if err := x.listen(dsn); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", redact(dsn), err)
	}
	return x, nil
}

// notifyChannel carries "the index changed" between replicas.
const notifyChannel = "modelreg_index"

// listen makes writes of other replicas advance this process's
// Generation: every write sends a notification naming its process, and a
// connection of this process listens for the others'. A replica's own
// writes advance its Generation when they commit, as on SQLite; another
// replica's, when its notification arrives (milliseconds later), so an
// answer cached by this replica may outlive a write committed elsewhere
// by that long. When the listening connection drops, the generation
// advances (notifications may have been missed) and it reconnects.
func (x *Index) listen(dsn string) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	idb := make([]byte, 8)
	rand.Read(idb)
	self := hex.EncodeToString(idb)
	ctx, cancel := context.WithCancel(context.Background())
	connect := func() (*pgx.Conn, error) {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if _, err := c.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
			c.Close(context.Background())
			return nil, err
		}
		return c, nil
	}
	c, err := connect()
	if err != nil {
		cancel()
		return fmt.Errorf("listening for the other replicas' writes: %w", err)
	}
	db, gen := x.db.DB, x.db.gen
	x.db.notify = func(ctx context.Context) {
		db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, self)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for c == nil {
				if c, err = connect(); err != nil {
					c = nil
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Second):
					}
					continue
				}
				gen.Add(1)
			}
			n, err := c.WaitForNotification(ctx)
			if err != nil {
				c.Close(context.Background())
				c = nil
				if ctx.Err() != nil {
					return
				}
				gen.Add(1)
				continue
			}
			if n.Payload != self {
				gen.Add(1)
			}
		}
	}()
	x.stop = func() { cancel(); <-done }
	return nil
}

// init brings the schema up to date (migrate) and reads whether a
// rebuild is needed.
func (x *Index) init(ctx context.Context) error {
	if !x.d.postgres {
		if err := x.dropLegacy(ctx); err != nil {
			return err
		}
	}
	if err := x.migrate(ctx); err != nil {
		return err
	}
	var rebuild string
	err := x.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'rebuild'`).Scan(&rebuild)
	switch {
	case err == nil:
		x.stale = true // a rebuild was needed or began and never finished
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	return nil
}

// dropLegacy drops the cache tables of a SQLite index from before
// versioned migrations whose schema is not the one the first migration
// adopts; the migration recreates them and marks a rebuild.
func (x *Index) dropLegacy(ctx context.Context) error {
	var n int
	if err := x.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, migrationsTable).Scan(&n); err != nil || n > 0 {
		return err
	}
	var version string
	if err := x.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema'`).Scan(&version); err == nil && version == legacySchema {
		return nil
	}
	for _, t := range tables {
		if _, err := x.db.ExecContext(ctx, `DROP TABLE IF EXISTS `+t); err != nil {
			return err
		}
	}
	return nil
}

// migrate applies the migrations the index has not had, under an
// advisory lock on PostgreSQL (replicas starting together migrate once).
func (x *Index) migrate(ctx context.Context) error {
	dir, dia := "migrations/sqlite", goose.DialectSQLite3
	var opts []goose.ProviderOption
	if x.d.postgres {
		dir, dia = "migrations/postgres", goose.DialectPostgres
		l, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 600))
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(l))
	}
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return err
	}
	opts = append(opts, goose.WithTableName(migrationsTable), goose.WithDisableGlobalRegistry(true))
	p, err := goose.NewProvider(dia, x.db.DB, fsys, opts...)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrating the index schema: %w", err)
	}
	x.db.gen.Add(1)
	return nil
}

// Version reports the index's schema version (its newest migration) and
// the newest this binary knows.
func (x *Index) Version(ctx context.Context) (have, want int64, err error) {
	err = x.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM `+migrationsTable+` WHERE is_applied`).Scan(&have)
	if err != nil {
		return 0, 0, err
	}
	dir := "migrations/sqlite"
	if x.d.postgres {
		dir = "migrations/postgres"
	}
	files, err := fs.Glob(migrations, dir+"/*.sql")
	if err != nil {
		return 0, 0, err
	}
	for _, f := range files {
		var v int64
		fmt.Sscanf(filepath.Base(f), "%d_", &v)
		want = max(want, v)
	}
	return have, want, nil
}

// Close closes the database: readers first, so the writer's connection,
// the last to close, checkpoints the WAL (SQLite).
func (x *Index) Close() error {
	if x.stop != nil {
		x.stop()
	}
	if x.d.postgres {
		return x.db.DB.Close() // one pool
	}
	rerr := x.rd.Close()
	return errors.Join(rerr, x.db.DB.Close())
}
