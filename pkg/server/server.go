// Package server runs modelreg's registry: the distribution v3 handler,
// embedded in this process behind modelreg's own http.Server, storing blobs
// and manifests on the local filesystem.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/sirupsen/logrus"

	// Registered by import: the filesystem storage driver.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// Options configures a Server. Only DataDir is required.
type Options struct {
	// Addr is the listen address; the default 127.0.0.1:5000 keeps the
	// registry private to this machine. Port 0 picks a free port.
	Addr string
	// DataDir holds all storage (blobs, manifests, tags).
	DataDir string
	// Htpasswd, when set, is an htpasswd file (bcrypt entries) whose users
	// may use the registry; every request then needs basic auth.
	Htpasswd string
	// AnonymousRead lets requests without credentials pull (GET and HEAD)
	// when Htpasswd is set; writes still need a user.
	AnonymousRead bool
	// Logger receives structured logs; nil logs to stderr as text.
	Logger *slog.Logger
	// MaxCatalogEntries and MaxTags bound one page of /v2/_catalog and of a
	// tags list; 0 means 1000.
	MaxCatalogEntries, MaxTags int
	// Reindex rebuilds the index from storage before serving.
	Reindex bool
	// Policy, when set, is enforced on every write of a stage tag: the
	// server refuses moves the policy does not allow.
	Policy *policy.Policy
	// Bare serves distribution alone, without the modelreg extension
	// (no index, gate or model API): only for measuring the extension's cost.
	Bare bool
	// PprofAddr, when set, serves net/http/pprof there, for profiling.
	PprofAddr string
}

// Server is a running registry.
type Server struct {
	opts    Options
	log     *slog.Logger
	app     *handlers.App
	idx     *index.Index
	handler http.Handler
	ln      net.Listener
}

// New prepares a registry over opts.DataDir and binds its listener, so the
// address is known (and taken) before Serve runs.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:5000"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.MaxCatalogEntries <= 0 {
		opts.MaxCatalogEntries = 1000
	}
	if opts.MaxTags <= 0 {
		opts.MaxTags = 1000
	}
	if opts.DataDir == "" {
		return nil, errors.New("a data directory is required (--data)")
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
		return nil, errors.New("--anonymous-read needs --htpasswd: without it every request is anonymous already")
	}
	bridgeLogrus(opts.Logger)

	// Kept with the data, so uploads in progress survive a restart.
	secret, err := httpSecret(filepath.Join(data, "modelreg", "http-secret"), rand.Reader)
	if err != nil {
		return nil, err
	}
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": data},
			"delete":     configuration.Parameters{"enabled": true},
			"cache":      configuration.Parameters{"blobdescriptor": "inmemory"},
		},
		Catalog: configuration.Catalog{MaxEntries: opts.MaxCatalogEntries},
		Tags:    configuration.Tags{MaxTags: opts.MaxTags},
	}
	cfg.HTTP.Secret = hex.EncodeToString(secret)
	// Accept non-distributable layers' URLs (any http or https URL), as the
	// OCI spec allows; distribution refuses them unless told.
	cfg.Validation.Manifests.URLs.Allow = []string{"^https?://"}
	cfg.Log.AccessLog.Disabled = true

	var idx *index.Index
	if !opts.Bare {
		if idx, err = openIndex(ctx, data, opts); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		if idx != nil {
			idx.Close()
		}
		return nil, fmt.Errorf("cannot listen on %s: %w; pick another --addr", opts.Addr, err)
	}
	app := handlers.NewApp(ctx, cfg)
	s := &Server{opts: opts, log: opts.Logger, app: app, idx: idx, ln: ln}
	var h http.Handler = app
	if !opts.Bare {
		rt := &router{next: app, idx: idx, log: opts.Logger}
		rt.gate = &gate{policy: opts.Policy, idx: idx, self: rt, locks: map[string]*sync.Mutex{}}
		h = rt
	}
	if users != nil {
		h = &authenticator{users: users, anonymousRead: opts.AnonymousRead, next: h, cache: map[[32]byte]time.Time{}}
	}
	s.handler = accessLog(opts.Logger, h)
	return s, nil
}

// openIndex opens the index under the data directory and brings it in
// line with storage: all of it on --reindex or when the index is new,
// otherwise only the repositories a crash left with unfinished writes.
func openIndex(ctx context.Context, data string, opts Options) (*index.Index, error) {
	dir := filepath.Join(data, "modelreg")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "index.db")
	_, statErr := os.Stat(path)
	idx, err := index.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := openStorage(ctx, data)
	if err != nil {
		idx.Close()
		return nil, err
	}
	var repos []string
	switch {
	case opts.Reindex || statErr != nil:
		repos = nil // all
	default:
		if repos, err = idx.Pending(ctx); err != nil {
			idx.Close()
			return nil, err
		}
		if len(repos) == 0 {
			return idx, nil
		}
	}
	n, err := rebuild(ctx, idx, st, repos)
	if err != nil {
		idx.Close()
		return nil, fmt.Errorf("rebuilding the index from storage: %w", err)
	}
	switch {
	case repos == nil:
		opts.Logger.Info("index rebuilt from storage", "repositories", n)
	default:
		opts.Logger.Warn("index repaired after an interrupted write", "repositories", repos)
	}
	return idx, nil
}

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
	s.log.Info("registry listening", "addr", s.Addr(), "data", s.opts.DataDir, "auth", s.opts.Htpasswd != "")
	if s.opts.PprofAddr != "" {
		if h, _, _ := net.SplitHostPort(s.opts.PprofAddr); h != "127.0.0.1" && h != "localhost" && h != "::1" {
			return fmt.Errorf("--pprof-addr %s: profiling is served on loopback only", s.opts.PprofAddr)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go http.ListenAndServe(s.opts.PprofAddr, mux)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		s.app.Shutdown()
		s.closeIndex()
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	s.app.Shutdown()
	s.closeIndex()
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("stopped")
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

// bridgeLogrus sends distribution's logrus output to slog, so the server
// writes one structured log stream.
func bridgeLogrus(log *slog.Logger) {
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
