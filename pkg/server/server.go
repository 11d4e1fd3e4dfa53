// Package server runs modelreg's registry: the distribution v3 handler,
// embedded in this process behind modelreg's own http.Server, storing blobs
// and manifests on the storage its configuration names: the local
// filesystem under the data directory by default, or S3 (docs/deploy-scale.md).
package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	storagemiddleware "github.com/distribution/distribution/v3/registry/storage/driver/middleware"
	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	// Registered by import: the storage drivers (filesystem, S3 and
	// S3-compatible stores) and the storage middleware that redirects
	// pulls (redirect, cloudfront, rewrite). Cloud SDKs enter the binary
	// here, never through pkg/client (internal/archtest checks).
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/cloudfront"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/redirect"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/rewrite"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// Options configures a Server. Only DataDir is required.
type Options struct {
	// Addr is the listen address; the default 127.0.0.1:5000 keeps the
	// registry private to this machine. Port 0 picks a free port.
	Addr string
	// DataDir holds the server's own state (keys, index, upload scratch)
	// and, unless Config names another storage, the blobs, manifests and
	// tags.
	DataDir string
	// Htpasswd, when set, is an htpasswd file (bcrypt entries) whose users
	// may use the registry; every request then needs basic auth.
	Htpasswd string
	// AnonymousRead lets requests without credentials pull (GET and HEAD)
	// when Htpasswd is set; writes still need a user.
	AnonymousRead bool
	// ReadOnlyUsers are htpasswd users who may pull (GET, HEAD) but not
	// push or delete: accounts for deploy jobs and readers, whose leaked
	// password must not let anyone change a model or a stage. Each must be
	// in the Htpasswd file, else New fails.
	ReadOnlyUsers []string
	// AdminUsers may take versions down (docs/lifecycle.md): delete a
	// version that was in a protected stage, and its weights with it. Each
	// must be in the Htpasswd file, else New fails; without an htpasswd
	// file the local operator is admin and the list must be empty.
	AdminUsers []string
	// Logger receives structured logs; nil logs to stderr as text.
	Logger *slog.Logger
	// MaxCatalogEntries and MaxTags bound one page of /v2/_catalog and of a
	// tags list; 0 means 1000.
	MaxCatalogEntries, MaxTags int
	// Reindex rebuilds the index from storage before serving.
	Reindex bool
	// Index names the index's database (index.ParseDSN): "sqlite:PATH"
	// (one process; the default, sqlite:<DataDir>/modelreg/index.db) or a
	// PostgreSQL URL, postgres://USER@HOST/DB, which several replicas on
	// one storage share.
	Index string
	// Policy, when set, is enforced on every write of a stage tag: the
	// server refuses moves the policy does not allow. It is fixed for the
	// server's life; PolicyFile is the watched alternative.
	Policy *policy.Policy
	// PolicyFile is a trust policy file, re-read when it changes and on
	// Reload (SIGHUP); an invalid new version keeps the old one in force
	// and is reported in the log and on the status endpoint. When neither
	// Policy nor PolicyFile is set, DefaultPolicyPath(DataDir) is watched
	// (taken when it appears), so a registry's gate does not depend on how
	// it was started.
	PolicyFile string
	// RecordClientAddress puts the client's address in the actor of
	// records of anonymous moves ("anonymous@10.0.0.7"); off by default,
	// as records are readable by every client.
	RecordClientAddress bool
	// ModelcarBase, when set, names a base image in this registry, pinned
	// by digest (REPO@sha256:…), under which <repo>/modelcar serves every
	// version's files at /models: an image KServe's oci:// (modelcar) can
	// run, since it starts the image with sh. The operator chooses and
	// trusts the base; no user can put layers of their own under a model.
	ModelcarBase string
	// Bare serves distribution alone, without the modelreg extension
	// (no index, gate or model API): only for measuring the extension's cost.
	Bare bool
	// PprofAddr, when set, serves net/http/pprof there, for profiling.
	PprofAddr string
	// AccessFile is an access policy file (docs/access.md): with one (or
	// an access: section in Config), every request is authenticated by
	// basic credentials or a bearer token from TokenPath, and decided by
	// the policy; without, htpasswd users may do everything (but
	// ReadOnlyUsers). It is re-read when it changes and on SIGHUP.
	AccessFile string
	// TokenService names the token service (the Bearer challenge's
	// service, the tokens' audience); default "modelreg".
	TokenService string
	// TokenLifetime bounds a bearer token's life (default 5 minutes):
	// with the per-request check of robot state, how revocation works.
	TokenLifetime time.Duration
	// Config is the configuration file's content (event subscriptions,
	// retention); nil is an empty configuration.
	Config *config.Config
	// TLSCert and TLSKey, when set (both, or neither), make the server
	// speak HTTPS and HTTP/2 with this certificate and key (PEM files):
	// anything that leaves the machine should not carry credentials and
	// model weights in the clear. They override Config.TLS; the files are
	// re-read when they change and on ReloadTLS.
	TLSCert, TLSKey string
	// UploadSecret is a file holding the secret distribution signs upload
	// state with (hex, at least 32 bytes); replicas behind one load
	// balancer must share it, else a PATCH landing on another replica than
	// the POST fails. It overrides Config.UploadSecret; without either the
	// secret is made once and kept in <data>/modelreg/http-secret.
	UploadSecret string
}

// DefaultPolicyPath is where `modelreg serve` looks for a trust policy
// when none is named: inside the data directory, never the working
// directory of the server process.
func DefaultPolicyPath(dataDir string) string {
	return filepath.Join(dataDir, "modelreg", "policy.yaml")
}

// Server is a running registry.
type Server struct {
	opts    Options
	log     *slog.Logger
	app     *handlers.App
	st      *store
	idx     *index.Index
	gate    *gate
	uploads *uploads
	views   *views
	gc      *collector
	life    *lifecycle
	events  *dispatcher
	access  *accessHolder
	// id names this process among replicas (replicas.go).
	id      string
	limits  *limits
	watcher *policy.Watcher
	key     *promotion.ServerKey
	handler http.Handler
	ln      net.Listener
	cert    *certificate // nil: plain HTTP
}

// New prepares a registry over opts.DataDir and binds its listener, so the
// address is known (and taken) before Serve runs.
func New(ctx context.Context, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	if opts.DataDir == "" {
		return nil, errors.New("a data directory is required")
	}
	if (opts.TLSCert == "") != (opts.TLSKey == "") {
		return nil, errors.New("TLS needs both a certificate and its key (--tls-cert and --tls-key), or neither for plain HTTP")
	}
	data, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(data, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create data directory %s: %w", opts.DataDir, err)
	}
	var users map[string][]byte
	if opts.Htpasswd != "" {
		if users, err = loadHtpasswd(opts.Htpasswd); err != nil {
			return nil, err
		}
	} else if opts.AnonymousRead {
		return nil, errors.New("anonymous read needs an htpasswd file: without one every request is anonymous already")
	}
	if err := checkReadOnly(users, opts.ReadOnlyUsers); err != nil {
		return nil, err
	}
	if err := checkAdmins(users, opts.AdminUsers, opts.ReadOnlyUsers); err != nil {
		return nil, err
	}
	accessMode := opts.AccessFile != "" || opts.Config.Access != nil
	if accessMode && (opts.AnonymousRead || len(opts.ReadOnlyUsers) > 0 || len(opts.AdminUsers) > 0) {
		return nil, errors.New("--anonymous-read, --read-only-user and --admin-user do not apply with an access policy: grant pull to anonymous, pull to the user, admin to the user in its rules (docs/access.md)")
	}
	if opts.Config.OIDC != nil && !accessMode {
		return nil, errors.New("the configuration's oidc: section needs an access policy (--access FILE or an access: section): OIDC names people and their groups, and only an access policy says what they may do (docs/access.md)")
	}
	if accessMode && opts.Bare {
		return nil, errors.New("an access policy needs the modelreg extension (not --bare)")
	}

	sc := effectiveStorage(data, opts.Config)
	st, err := openStorage(ctx, sc)
	if err != nil {
		return nil, err
	}
	for _, m := range opts.Config.Middleware["storage"] {
		if _, err := storagemiddleware.Get(ctx, m.Name, m.Options, st.driver); err != nil {
			return nil, fmt.Errorf("middleware.storage %s: %w (distribution's middleware reference lists its options)", m.Name, err)
		}
	}
	cfg, err := distributionConfig(data, opts, sc)
	if err != nil {
		return nil, err
	}

	s := &Server{opts: opts, log: opts.Logger, st: st, id: replicaID()}
	if opts.TLSCert != "" {
		if s.cert, err = newCertificate(opts.TLSCert, opts.TLSKey, opts.Logger); err != nil {
			return nil, err
		}
	}
	var h http.Handler
	if !opts.Bare {
		if err := s.openExtension(ctx, data); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		s.closeIndex()
		return nil, fmt.Errorf("cannot listen on %s: %w; pick another address", opts.Addr, err)
	}
	s.ln = ln
	if s.app, err = newApp(ctx, cfg); err != nil {
		s.closeIndex()
		ln.Close()
		return nil, err
	}
	h = s.app
	if !opts.Bare {
		rt := &router{next: s.app, idx: s.idx, log: opts.Logger, gate: s.gate, uploads: s.uploads, views: s.views, events: s.events, limits: s.limits, answers: &answers{}, status: s.Status,
			gc: s.gc, admin: adminCheck(users, opts.AdminUsers)}
		s.gate.self = rt
		s.gc.app = s.app
		s.life = &lifecycle{rt: rt, cfg: opts.Config.Retention, idx: s.idx, st: s.gate.st, gc: s.gc, log: opts.Logger}
		rt.lifecycle = s.life
		h = rt
	}
	switch {
	case accessMode:
		g, err := s.newGuard(data, users, h.(*router))
		if err != nil {
			s.closeIndex()
			ln.Close()
			return nil, err
		}
		h = g
	case users != nil:
		h = newAuthenticator(users, opts.ReadOnlyUsers, opts.AnonymousRead, h, opts.Logger)
	}
	// Probes first (no credentials, no access log), then metrics around
	// everything else, refusals included.
	s.handler = s.probes(instrument(accessLog(opts.Logger, h)))
	return s, nil
}

// withDefaults fills in what Options leaves at zero.
func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:5000"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.MaxCatalogEntries <= 0 {
		o.MaxCatalogEntries = 1000
	}
	if o.MaxTags <= 0 {
		o.MaxTags = 1000
	}
	if o.Config == nil {
		o.Config = &config.Config{}
	}
	if o.UploadSecret == "" {
		o.UploadSecret = o.Config.UploadSecret
	}
	if o.TLSCert == "" && o.TLSKey == "" {
		o.TLSCert, o.TLSKey = o.Config.TLS.Cert, o.Config.TLS.Key
	}
	if o.TokenService == "" {
		o.TokenService = "modelreg"
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = 5 * time.Minute
	}
	return o
}

// effectiveStorage is the storage section distribution and the server's
// own store both open: the configuration's, passed through, with
// modelreg's defaults where it is silent: the filesystem under data,
// deletes enabled (the extension gates them), and an in-memory blob
// descriptor cache unless replicas share the storage (each replica's
// cache would go stale when another deletes a blob).
func effectiveStorage(data string, c *config.Config) configuration.Storage {
	sc := configuration.Storage{}
	for k, v := range c.Storage {
		sc[k] = maps.Clone(v)
	}
	switch sc.Type() {
	case "":
		sc["filesystem"] = configuration.Parameters{"rootdirectory": data}
	case "filesystem":
		if sc["filesystem"] == nil {
			sc["filesystem"] = configuration.Parameters{}
		}
		if _, ok := sc["filesystem"]["rootdirectory"]; !ok {
			sc["filesystem"]["rootdirectory"] = data
		}
	}
	if _, ok := sc["delete"]; !ok {
		sc["delete"] = configuration.Parameters{"enabled": true}
	}
	if _, ok := sc["cache"]; !ok && !c.Shared() {
		sc["cache"] = configuration.Parameters{"blobdescriptor": "inmemory"}
	}
	return sc
}

// distributionConfig is what the embedded distribution is told: the
// storage section sc, the storage middleware of the configuration, page
// bounds, and the upload-state secret (the configured file, else one kept
// with the data so uploads survive a restart).
func distributionConfig(data string, opts Options, sc configuration.Storage) (*configuration.Configuration, error) {
	secret, err := uploadSecret(data, opts.UploadSecret)
	if err != nil {
		return nil, err
	}
	cfg := &configuration.Configuration{
		Storage: sc,
		Catalog: configuration.Catalog{MaxEntries: opts.MaxCatalogEntries},
		Tags:    configuration.Tags{MaxTags: opts.MaxTags},
	}
	if m := opts.Config.Middleware; m != nil {
		cfg.Middleware = map[string][]configuration.Middleware(m)
	}
	cfg.HTTP.Secret = hex.EncodeToString(secret)
	// Accept non-distributable layers' URLs (any http or https URL), as the
	// OCI spec allows; distribution refuses them unless told.
	cfg.Validation.Manifests.URLs.Allow = []string{"^https?://"}
	cfg.Log.AccessLog.Disabled = true
	return cfg, nil
}

// newApp is handlers.NewApp, which panics on a configuration it cannot
// use (a driver option of the wrong type, a middleware that fails): here
// that is an error naming distribution, so `modelreg serve` exits with a
// message rather than a stack trace.
func newApp(ctx context.Context, cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("distribution refused the storage or middleware configuration: %v", r)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

// openPolicy returns the policy in force: fixed (Options.Policy), or
// watched from Options.PolicyFile, else from DefaultPolicyPath(data),
// which is taken within a second of being created.
func (s *Server) openPolicy(data string) (func() *policy.Policy, error) {
	if s.opts.PolicyFile == "" && s.opts.Policy != nil {
		p := s.opts.Policy
		return func() *policy.Policy { return p }, nil
	}
	var w *policy.Watcher
	var err error
	if s.opts.PolicyFile != "" {
		w, err = policy.NewWatcher(s.opts.PolicyFile, s.opts.Logger)
	} else {
		w, err = policy.NewOptionalWatcher(DefaultPolicyPath(data), s.opts.Logger)
	}
	if err != nil {
		return nil, err
	}
	s.watcher = w
	return w.Current, nil
}

// openExtension opens the policy, the server key, the storage and the
// index, brings the index in line with storage (all of it when it is new,
// of another schema, or a rebuild was cut short; otherwise the
// repositories a crash left with writes in flight), and finishes stage
// moves a crash cut short.
func (s *Server) openExtension(ctx context.Context, data string) error {
	opts := s.opts
	policyFn, err := s.openPolicy(data)
	if err != nil {
		return err
	}
	dir := filepath.Join(data, "modelreg")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := s.requireShared(filepath.Join(dir, "server-key.pem"), "the server key that signs promotion records"); err != nil {
		return err
	}
	key, err := promotion.LoadOrCreateServerKey(filepath.Join(dir, "server-key.pem"))
	if err != nil {
		return err
	}
	s.key = key
	st := s.st
	dsn := opts.Index
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(dir, "index.db")
	}
	idx, err := index.Open(dsn)
	if err != nil {
		return err
	}
	s.idx = idx
	dec := &decoder{pub: key.Public()}
	s.gate = &gate{policy: policyFn, idx: idx, st: st, key: key, dec: dec, log: opts.Logger,
		clientAddr: opts.RecordClientAddress, locks: map[string]*refLock{}}
	s.uploads = newUploads(filepath.Join(dir, "uploads"), st, opts.Logger)
	if opts.Config.Shared() {
		// The parts of one upload are held in this process and its
		// scratch file: parts sent to another replica would not find
		// them. Clients see no parts endpoint and use the OCI upload.
		s.uploads.off = "uploads in parts are off on this registry: its replicas share storage, and the parts of one upload must reach one process; use the OCI blob upload (POST, PATCH, PUT)"
	}
	s.gc = newCollector(st, opts.Config.Retention.GraceOrDefault(), opts.Logger)
	s.views = newViews(idx, st, opts.Logger)
	s.events = newDispatcher(idx, opts.Config.Events, "/modelreg/"+promotion.KeyID(key.Public()), opts.Logger)
	s.gate.views = s.views
	s.limits = newLimits(opts.Config.Limits, idx, st)
	if opts.ModelcarBase != "" {
		repo, d, ok := strings.Cut(opts.ModelcarBase, "@")
		if _, err := digest.Parse(d); !ok || err != nil || !validRepoName(repo) {
			return fmt.Errorf("modelcar base %q: name a repository of this registry pinned by digest, REPO@sha256:…", opts.ModelcarBase)
		}
		s.views.base = &baseImage{repo: repo, digest: digest.Digest(d)}
	}
	fail := func(err error) error {
		idx.Close()
		s.idx = nil
		return err
	}
	// Replicas sharing a PostgreSQL index start one at a time from here
	// to the end of recovery: one rebuilds, the others find it done.
	unlock, err := idx.LockRebuild(ctx)
	if err != nil {
		return fail(fmt.Errorf("waiting for other replicas to finish bringing the index in line with storage: %w", err))
	}
	defer unlock()
	stale, err := idx.NeedsRebuild(ctx)
	if err != nil {
		return fail(err)
	}
	var repos []string
	full := opts.Reindex || stale
	if !full {
		if repos, err = idx.Pending(ctx); err != nil {
			return fail(err)
		}
	}
	if full || len(repos) > 0 {
		if full {
			repos = nil
			opts.Logger.Info("rebuilding the index from storage")
		}
		n, err := rebuild(ctx, idx, st, dec, repos)
		if err != nil {
			return fail(fmt.Errorf("rebuilding the index from storage: %w", err))
		}
		if full {
			opts.Logger.Info("index rebuilt from storage", "repositories", n)
		} else {
			opts.Logger.Warn("index repaired after an interrupted write", "repositories", repos)
		}
	}
	if err := s.gate.recover(ctx, "", ""); err != nil {
		return fail(fmt.Errorf("finishing stage moves cut short: %w", err))
	}
	if err := s.gate.anchor(ctx, filepath.Join(dir, "chain-genesis")); err != nil {
		return fail(fmt.Errorf("anchoring the stage histories written before the chain: %w", err))
	}
	if f, err := idx.Failures(ctx); err == nil && len(f) > 0 {
		opts.Logger.Error("manifests the index could not take (listed on /v2/_modelreg/v1/status)", "count", len(f), "first", f[0])
	}
	// Versions whose weights were never read (pushed before this server
	// read them, or just rebuilt): read in the background.
	go s.views.backfill(context.WithoutCancel(ctx))
	return nil
}

// Status is what /v2/_modelreg/v1/status publishes (wire.Status).
type Status = wire.Status

// Status reports the server's trust anchor and health.
func (s *Server) Status() Status {
	st := Status{ProtectedStages: []string{}, IndexFailures: []string{}, PendingRepositories: []string{}}
	if s.key != nil {
		st.ServerKey = promotion.PublicPEM(s.key.Public())
		st.ServerKeyID = promotion.KeyID(s.key.Public())
	}
	if s.watcher != nil {
		st.Policy = s.watcher.Status()
	} else if s.opts.Policy != nil {
		st.Policy = map[string]string{"path": s.opts.Policy.Source, "digest": s.opts.Policy.Digest}
	}
	if s.gate != nil {
		if p := s.gate.policy(); p != nil {
			for name := range p.Stages {
				st.ProtectedStages = append(st.ProtectedStages, name)
			}
			slices.Sort(st.ProtectedStages)
		}
	}
	if s.access != nil {
		st.Access = s.access.status()
	}
	if s.limits != nil {
		st.Limits = s.limits.status()
	}
	if s.idx != nil {
		ctx := context.Background()
		if f, err := s.idx.Failures(ctx); err == nil && f != nil {
			st.IndexFailures = f
		}
		if p, err := s.idx.Pending(ctx); err == nil && p != nil {
			st.PendingRepositories = p
		}
	}
	return st
}

// Collect applies the retention rules and collects unreferenced blobs,
// as POST /v2/_modelreg/v1/gc does (docs/lifecycle.md).
func (s *Server) Collect(ctx context.Context, req wire.GCRequest) (wire.GCReport, error) {
	if s.life == nil {
		return wire.GCReport{}, errors.New("a bare server has no lifecycle")
	}
	return s.life.run(ctx, req, "")
}

// ReloadPolicy re-reads the policy file (SIGHUP); an invalid file keeps the
// policy in force and is returned.
func (s *Server) ReloadPolicy() error {
	if s.watcher == nil {
		return errors.New("no policy file to reload")
	}
	return s.watcher.Reload()
}

// ReloadTLS re-reads the TLS certificate and key (SIGHUP); a pair that
// does not load keeps the one in force and is returned. Without TLS it
// does nothing.
func (s *Server) ReloadTLS() error {
	if s.cert == nil {
		return nil
	}
	return s.cert.Reload()
}

// TLS reports whether the server speaks HTTPS.
func (s *Server) TLS() bool { return s.cert != nil }

// ReloadAccess re-reads the access policy file (SIGHUP); an invalid file
// keeps the policy in force and is returned. Without an access policy
// file it does nothing.
func (s *Server) ReloadAccess() error {
	if s.access == nil || s.access.path == "" {
		return nil
	}
	return s.access.Reload()
}

// newGuard puts the access policy in front of rt: its holder, the token
// issuer (key kept with the data) and the credentials it accepts.
func (s *Server) newGuard(data string, users map[string][]byte, rt *router) (*guard, error) {
	h, err := newAccessHolder(s.opts.AccessFile, s.opts.Config.Access, s.log)
	if err != nil {
		return nil, err
	}
	s.access = h
	if err := s.requireShared(filepath.Join(data, "modelreg", "token-key.pem"), "the key that signs bearer tokens"); err != nil {
		return nil, err
	}
	key, err := loadTokenKey(filepath.Join(data, "modelreg", "token-key.pem"))
	if err != nil {
		return nil, err
	}
	g := &guard{idx: s.idx, policy: h.current, next: rt, log: s.log, throttle: newThrottle(), seen: map[string]time.Time{},
		tokens: &tokenIssuer{key: key, service: s.opts.TokenService, lifetime: s.opts.TokenLifetime}, deny: rt.denied}
	if users != nil {
		g.users = newAuthenticator(users, nil, false, nil, s.log)
	}
	if c := s.opts.Config.OIDC; c != nil {
		if g.web, err = newOIDCAuth(c, data, s.log); err != nil {
			return nil, err
		}
		g.oidc = g.web.verify
	}
	rt.guard = g
	return g, nil
}

// ProtectedStages lists the stages the policy in force protects.
func (s *Server) ProtectedStages() []string { return s.Status().ProtectedStages }

// Addr is the address the server listens on (with the port picked, if 0 was asked).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler is the whole registry as an http.Handler, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests until ctx is done, then stops accepting, lets
// running requests finish (up to 30 s), and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cert != nil {
		srv.TLSConfig = s.cert.tlsConfig()
	}
	s.log.Info("registry listening", "addr", s.Addr(), "data", s.opts.DataDir, "auth", s.opts.Htpasswd != "" || s.access != nil, "access_policy", s.access != nil, "tls", s.cert != nil)
	if !s.opts.Bare {
		st := s.Status()
		if len(st.ProtectedStages) == 0 {
			s.log.Warn("no trust policy: stage moves are recorded but not gated", "policy", DefaultPolicyPath(s.opts.DataDir))
		} else {
			s.log.Info("stages protected by the trust policy", "stages", st.ProtectedStages)
		}
	}
	if s.opts.PprofAddr != "" {
		if h, _, _ := net.SplitHostPort(s.opts.PprofAddr); h != "127.0.0.1" && h != "localhost" && h != "::1" {
			return fmt.Errorf("profiling address %s: profiling is served on loopback only", s.opts.PprofAddr)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go http.ListenAndServe(s.opts.PprofAddr, mux)
	}
	if s.access != nil {
		stop := make(chan struct{})
		defer close(stop)
		go s.access.watch(stop)
	}
	s.publishOnce(ctx)
	pctx, cancelPublish := context.WithCancel(context.WithoutCancel(ctx))
	published := make(chan struct{})
	go func() { defer close(published); s.publish(pctx) }()
	stopEvents := func() { cancelPublish(); <-published }
	if s.events != nil {
		ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); s.events.run(ectx) }()
		stopEvents = func() { cancel(); <-done; cancelPublish(); <-published }
	}
	if s.life != nil {
		go s.life.schedule(ctx)
	}
	errc := make(chan error, 1)
	go func() {
		if s.cert != nil {
			// The certificate comes from TLSConfig.GetCertificate, so that
			// a renewed one is taken without a restart.
			errc <- srv.ServeTLS(s.ln, "", "")
			return
		}
		errc <- srv.Serve(s.ln)
	}()
	select {
	case err := <-errc:
		stopEvents()
		s.app.Shutdown()
		s.closeIndex()
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	stopEvents()
	s.app.Shutdown()
	s.closeIndex()
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// requireShared refuses to make a key replicas must share: with
// replicas: true a missing key file means this replica would sign with a
// key of its own, which the other replicas do not know.
func (s *Server) requireShared(path, what string) error {
	if !s.opts.Config.Shared() {
		return nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replicas: true: %s is missing; every replica needs the same %s: copy it from the first server, or make one (`openssl genpkey -algorithm ed25519 -out %s`) and give it to every replica (docs/deploy-scale.md)", path, what, filepath.Base(path))
	}
	return nil
}

func (s *Server) closeIndex() {
	if s.idx != nil {
		s.idx.Close()
	}
}

// accessLog logs one line per request.
func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rw, r)
		level := slog.LevelInfo
		if rw.status >= 500 {
			level = slog.LevelError
		}
		log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", rw.status,
			"bytes_in", r.ContentLength, "bytes_out", rw.n, "duration_ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps the kernel's zero-copy path (sendfile) for blob downloads.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseWriter, r)
	w.n += n
	return n, err
}

// LogDistributionTo sends distribution's logs (which go through logrus's
// global logger) to log, so the server writes one structured log stream.
// It changes process-wide state, so a program calls it once, at start-up
// (modelreg's CLI does in `serve`); a library embedding the server decides
// for itself.
func LogDistributionTo(log *slog.Logger) {
	l := logrus.StandardLogger()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.InfoLevel)
	l.ReplaceHooks(logrus.LevelHooks{})
	l.AddHook(slogHook{log})
}

type slogHook struct{ log *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	level := slog.LevelDebug
	switch {
	case e.Level <= logrus.ErrorLevel:
		level = slog.LevelError
	case e.Level == logrus.WarnLevel:
		level = slog.LevelWarn
	case e.Level == logrus.InfoLevel:
		level = slog.LevelInfo
	}
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 {
		level = slog.LevelDebug // a client error, already in the access log
	}
	attrs := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		if k == "go.version" || k == "instance.id" {
			continue
		}
		attrs = append(attrs, k, v)
	}
	h.log.Log(context.Background(), level, e.Message, append([]any{"component", "distribution"}, attrs...)...)
	return nil
}
