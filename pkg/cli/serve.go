package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/server"
	"github.com/spf13/cobra"
)

func (a *app) serveCmd() *cobra.Command {
	var opts server.Options
	var logFormat, logLevel, policyPath, configPath string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run an OCI registry for models on this machine",
		Long: `Run an OCI distribution registry (distribution v3, embedded in this process)
storing everything under --data on the local filesystem, or blobs and
manifests on S3 when --config has a storage: section (distribution's own,
passed through; docs/deploy-scale.md). Any OCI client
(modelreg, oras, crane, cosign, docker) can push to and pull from it. Deletes
are enabled. The trust policy (--policy, else <data>/modelreg/policy.yaml
when it exists) is enforced on every write of a stage tag, whatever the
client; it is re-read when the file changes and on SIGHUP, and an invalid
new version keeps the old one in force (reported in the log and on
/v2/_modelreg/v1/status). With --htpasswd every request needs basic auth (bcrypt entries,
as written by ` + "`htpasswd -B`" + `). With --tls-cert and --tls-key (or tls: in
--config) it serves HTTPS (TLS 1.2 or later) and HTTP/2; the certificate is
re-read when its files change and on SIGHUP. Logs are structured (text or JSON) on
standard error; SIGINT or SIGTERM stops accepting requests, lets running
ones finish, and exits. /healthz answers while the process is up, /readyz
while storage and index answer (both without credentials, for load
balancers), /metrics in Prometheus' format.`,
		Example: `  modelreg serve
  modelreg serve --addr 127.0.0.1:5000 --data /var/lib/modelreg --htpasswd ./htpasswd --log-format json
  modelreg serve --addr :443 --tls-cert /etc/modelreg/tls.crt --tls-key /etc/modelreg/tls.key --htpasswd ./htpasswd`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
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
			if configPath != "" {
				cfg, err := config.Load(configPath)
				if err != nil {
					return usageError{err}
				}
				opts.Config = cfg
				// The file's settings, where the flag was not given.
				set := c.Flags().Changed
				for _, f := range []struct {
					flag string
					dst  *string
					from string
				}{{"addr", &opts.Addr, cfg.Addr}, {"data", &opts.DataDir, cfg.Data}, {"index", &opts.Index, cfg.Index},
					{"policy", &policyPath, cfg.Policy}, {"access", &opts.AccessFile, cfg.AccessFile}, {"htpasswd", &opts.Htpasswd, cfg.Htpasswd}} {
					if !set(f.flag) && f.from != "" {
						*f.dst = f.from
					}
				}
				if !set("token-lifetime") && cfg.TokenLifetime > 0 {
					opts.TokenLifetime = cfg.TokenLifetime
				}
			}
			opts.PolicyFile = policyPath
			if c.Flags().Changed("tls-cert") != c.Flags().Changed("tls-key") {
				return usageError{errors.New("--tls-cert and --tls-key go together: give the certificate and its key (PEM files), or neither for plain HTTP")}
			}
			server.LogDistributionTo(opts.Logger)
			s, err := server.New(c.Context(), opts)
			if err != nil {
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					if err := s.ReloadAccess(); err != nil {
						opts.Logger.Error("SIGHUP: the access policy was not reloaded; the one in force stays", "err", err)
					}
					if err := s.ReloadPolicy(); err != nil {
						opts.Logger.Error("SIGHUP: the policy was not reloaded; the one in force stays", "err", err)
					} else {
						opts.Logger.Info("SIGHUP: policy reloaded", "stages", s.ProtectedStages())
					}
					// Logged by the server, whether taken or kept.
					s.ReloadTLS()
				}
			}()
			return s.Serve(c.Context())
		},
	}
	f := c.Flags()
	f.StringVar(&configPath, "config", "", "configuration file (YAML): storage, middleware, replicas, events, retention, limits, access, oidc and tls sections (docs/server.md); flags override it")
	f.StringVar(&opts.UploadSecret, "upload-secret", "", "file holding the upload-state secret (hex, at least 32 bytes) that replicas share; overrides uploadSecret of --config; default <data>/modelreg/http-secret, made on first start")
	f.StringVar(&opts.TLSCert, "tls-cert", "", "serve HTTPS and HTTP/2 with this certificate chain (PEM; with --tls-key), re-read when it changes and on SIGHUP; overrides tls.cert of --config")
	f.StringVar(&opts.TLSKey, "tls-key", "", "private key (PEM) of --tls-cert; overrides tls.key of --config")
	f.StringVar(&opts.AccessFile, "access", "", "access policy file (docs/access.md): who may pull, push, sign, delete, move which stage; enables token auth and robot accounts; re-read on change and SIGHUP")
	f.DurationVar(&opts.TokenLifetime, "token-lifetime", 5*time.Minute, "with an access policy, how long a bearer token lives")
	f.StringVar(&opts.Addr, "addr", "127.0.0.1:5000", "listen address; port 0 picks a free port")
	f.StringVar(&opts.DataDir, "data", "./data", "directory holding the registry's storage")
	f.StringVar(&opts.Htpasswd, "htpasswd", "", "htpasswd file (bcrypt); when set, every request needs basic auth")
	f.BoolVar(&opts.AnonymousRead, "anonymous-read", false, "with --htpasswd, let requests without credentials pull (GET, HEAD)")
	f.StringArrayVar(&opts.ReadOnlyUsers, "read-only-user", nil, "with --htpasswd, this user may pull (GET, HEAD) but not push or delete (repeatable; must be in the htpasswd file)")
	f.StringArrayVar(&opts.AdminUsers, "admin-user", nil, "with --htpasswd, this user may take versions down (modelreg delete --takedown; repeatable; must be in the htpasswd file); without --htpasswd the local operator is admin")
	f.StringVar(&policyPath, "policy", "", "trust policy enforced on every stage tag write, re-read on change and SIGHUP (docs/policy.md); default <data>/modelreg/policy.yaml when it exists; without one stage moves are recorded but not gated")
	f.BoolVar(&opts.RecordClientAddress, "record-client-address", false, "name anonymous actors in records with the client's address (anonymous@ADDR); off: records are readable by every client")
	f.StringVar(&opts.ModelcarBase, "modelcar-base", "", "base image (REPO@sha256:… in this registry, with sh, ln and sleep) under which <repo>/modelcar serves each version's files at /models, for KServe oci:// (docs/deploy.md)")
	f.StringVar(&opts.Index, "index", "", "the index's database: sqlite:PATH (default sqlite:<data>/modelreg/index.db, one process) or postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…] shared by several replicas on one storage (docs/deploy-scale.md)")
	f.BoolVar(&opts.Reindex, "reindex", false, "rebuild the index from storage before serving (it is also rebuilt when missing, and repaired after a crash)")
	f.BoolVar(&opts.Bare, "bare", false, "serve distribution without the modelreg extension (benchmarks only)")
	f.StringVar(&opts.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (loopback only; profiling)")
	f.MarkHidden("pprof-addr")
	f.MarkHidden("bare")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return c
}
