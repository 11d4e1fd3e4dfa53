package index

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/modelreg/modelreg/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// backends runs fn against SQLite and against PostgreSQL (a private
// cluster: internal/pgtest), each with a new, empty database from dsn.
func backends(t *testing.T, fn func(t *testing.T, dsn func(t testing.TB) string)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, func(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "index.db") })
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, func(t testing.TB) string { return pgtest.DB(t) })
	})
}

// openAt opens the index at dsn, closed when t ends.
func openAt(t testing.TB, dsn string) *Index {
	t.Helper()
	idx, err := Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	return idx
}
