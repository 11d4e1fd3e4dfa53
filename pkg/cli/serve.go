package cli

import (
	"fmt"
	"log/slog"

	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/server"
	"github.com/spf13/cobra"
)

func (a *app) serveCmd() *cobra.Command {
	var opts server.Options
	var logFormat, logLevel, policyPath string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run an OCI registry for models on this machine",
		Long: `Run an OCI distribution registry (distribution v3, embedded in this process)
storing everything under --data on the local filesystem. Any OCI client
(modelreg, oras, crane, cosign, docker) can push to and pull from it. Deletes
are enabled. With --htpasswd every request needs basic auth (bcrypt entries,
as written by ` + "`htpasswd -B`" + `). Logs are structured (text or JSON) on
standard error; SIGINT or SIGTERM stops accepting requests, lets running
ones finish, and exits.`,
		Example: `  modelreg serve
  modelreg serve --addr 127.0.0.1:5000 --data /var/lib/modelreg --htpasswd ./htpasswd --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			var err error
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: expected debug, info, warn or error", logLevel)}
			}
			hopts := &slog.HandlerOptions{Level: level}
			switch logFormat {
			case "text":
				opts.Logger = slog.New(slog.NewTextHandler(a.io.Err, hopts))
			case "json":
				opts.Logger = slog.New(slog.NewJSONHandler(a.io.Err, hopts))
			default:
				return usageError{fmt.Errorf("--log-format %q: expected text or json", logFormat)}
			}
			if policyPath != "" {
				if opts.Policy, err = policy.Load(policyPath); err != nil {
					return err
				}
			}
			s, err := server.New(c.Context(), opts)
			if err != nil {
				return err
			}
			return s.Serve(c.Context())
		},
	}
	f := c.Flags()
	f.StringVar(&opts.Addr, "addr", "127.0.0.1:5000", "listen address; port 0 picks a free port")
	f.StringVar(&opts.DataDir, "data", "./data", "directory holding the registry's storage")
	f.StringVar(&opts.Htpasswd, "htpasswd", "", "htpasswd file (bcrypt); when set, every request needs basic auth")
	f.BoolVar(&opts.AnonymousRead, "anonymous-read", false, "with --htpasswd, let requests without credentials pull (GET, HEAD)")
	f.StringVar(&policyPath, "policy", "", "trust policy enforced on every stage tag write (docs/policy.md); without it stage moves are recorded but not gated")
	f.BoolVar(&opts.Reindex, "reindex", false, "rebuild the index from storage before serving (it is also rebuilt when missing, and repaired after a crash)")
	f.BoolVar(&opts.Bare, "bare", false, "serve distribution without the modelreg extension (benchmarks only)")
	f.StringVar(&opts.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (loopback only; profiling)")
	f.MarkHidden("pprof-addr")
	f.MarkHidden("bare")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return c
}
