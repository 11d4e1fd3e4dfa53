package cli

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/modelreg/modelreg/pkg/index"
	"github.com/spf13/cobra"
)

func (a *app) indexCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "index",
		Short: "Manage modelreg serve's index database",
	}
	c.AddCommand(a.indexMigrateCmd())
	return c
}

func (a *app) indexMigrateCmd() *cobra.Command {
	var from, to string
	c := &cobra.Command{
		Use:   "migrate --from sqlite:PATH --to postgres://…",
		Short: "Move a server's index from SQLite to PostgreSQL",
		Long: `Move the index of modelreg serve from its SQLite file to PostgreSQL, to run
several replicas on one storage. Stop the server first.

What storage cannot give again is copied: the event outbox (events, cursors,
deliveries: subscribers see no gap and no repeat), robot accounts, and the
image views' tar digests. Everything else (manifests, tags, versions,
promotion histories, lineage) is rebuilt from storage, the source of truth,
by the first server that starts on the new index. The target must be a new,
empty database (its schema is created here); state is never merged.`,
		Example: `  modelreg index migrate --from sqlite:./data/modelreg/index.db --to postgres://modelreg@db:5432/modelreg
  modelreg serve --data ./data --index postgres://modelreg@db:5432/modelreg`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if from == "" || to == "" {
				return usageError{errors.New("give the index to copy from and to: --from sqlite:PATH --to postgres://USER@HOST/DB")}
			}
			fb, path, err := index.ParseDSN(from)
			if err != nil {
				return usageError{err}
			}
			if fb == index.SQLite {
				if _, err := os.Stat(path); err != nil {
					return usageError{fmt.Errorf("--from %s: %w (the server's index is <data>/modelreg/index.db)", from, err)}
				}
			}
			src, err := index.Open(from)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, err := index.Open(to)
			if err != nil {
				return err
			}
			defer dst.Close()
			report, err := src.CopyState(c.Context(), dst)
			if err != nil {
				return err
			}
			tables := make([]string, 0, len(report))
			for t := range report {
				tables = append(tables, t)
			}
			sort.Strings(tables)
			for _, t := range tables {
				fmt.Fprintf(a.io.Out, "%-18s %d rows\n", t, report[t])
			}
			fmt.Fprintf(a.io.Out, "copied into %s; the first modelreg serve --index on it rebuilds the rest from storage\n", index.Redact(to))
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "the index to copy: sqlite:PATH (the server's <data>/modelreg/index.db)")
	c.Flags().StringVar(&to, "to", "", "the new index: postgres://USER[:PASSWORD]@HOST[:PORT]/DB")
	return c
}
