// Package pgtest starts a private PostgreSQL cluster for tests: Debian's
// postgresql package, initdb and pg_ctl in a temp dir, listening on a
// loopback port only, as a non-root user (initdb refuses root; as root the
// cluster runs as the postgres user). One cluster serves a test binary;
// each test gets a database of its own.
//
// A package using it runs its tests through Run:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
//
// Where PostgreSQL is not installed, DB fails the test with the fix (`make
// deb-tools`): a test of the PostgreSQL index never passes by skipping.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Cluster is a running private cluster.
type Cluster struct {
	dir  string // its temp dir (data, log)
	bin  string // the directory of initdb, pg_ctl
	user string // the OS user it runs as, "" for the current one
	port int
	dbs  atomic.Int64
}

var (
	mu      sync.Mutex
	shared  *Cluster
	started error
	inRun   bool
)

// Run runs the tests of m, then stops the cluster if one was started.
func Run(m *testing.M) int {
	mu.Lock()
	inRun = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
		shared = nil
	}
	return code
}

// DB returns the URL of a new, empty database on the test binary's
// cluster (started at the first call), for a test's own use.
func DB(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	return c.NewDatabase(t)
}

// Shared returns the test binary's cluster, started at the first call.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if !inRun {
		t.Fatal("pgtest: the package's tests must run through pgtest.Run (func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }), which stops the cluster")
	}
	if shared == nil && started == nil {
		shared, started = Start()
	}
	if started != nil {
		t.Fatal(started)
	}
	return shared
}

// Bin finds the directory of Debian's PostgreSQL programs (the newest
// version installed), or says how to install them.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make deb-tools`, which installs Debian's postgresql package")
}

// Start initializes and starts a cluster in a new temp dir. Its default
// collation is ICU's en-US, a linguistic order, so a query that relies on
// the database's locale to sort by bytes fails in the tests.
func Start() (*Cluster, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "modelreg-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, the cluster needs a non-root user and Debian's postgresql package creates \"postgres\": %w (run `make deb-tools`)", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		c.user = "postgres"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	data := filepath.Join(dir, "data")
	if out, err := c.run("initdb", "-D", data, "-U", "modelreg", "-A", "trust", "-E", "UTF8",
		"--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", c.port)
	if out, err := c.run("pg_ctl", "start", "-w", "-t", "120", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return c, nil
}

// run runs one of the cluster's programs as its user.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.user != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.user, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// URL is the URL of database name on the cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://modelreg@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

// NewDatabase creates an empty database and returns its URL.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d", c.dbs.Add(1))
	db, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	return c.URL(name)
}

// Stop stops the cluster and removes its files.
func (c *Cluster) Stop() error {
	out, err := c.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", filepath.Join(c.dir, "data"))
	if err != nil && !strings.Contains(string(out), "PID file") {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	return os.RemoveAll(c.dir)
}
