// Command deploy-on-promotion receives modelreg serve's events and runs a
// deploy command when a stage (production by default) moves: the smallest
// useful receiver, and the pattern for a real one. It verifies every
// delivery's HMAC signature and time, acts on stage.moved events only,
// and remembers the event ids it has handled (in --state), so a
// redelivery (modelreg delivers at least once) never deploys twice.
//
// The deploy command runs with the event in its environment:
//
//	MODELREG_REPOSITORY  team/fraud
//	MODELREG_STAGE       production
//	MODELREG_DIGEST      sha256:… (the version the stage points at now)
//	MODELREG_PREVIOUS    sha256:… (the version it held before; "" the first time)
//	MODELREG_KIND        promotion or rollback
//	MODELREG_ACTOR, MODELREG_REASON, MODELREG_RECORD, MODELREG_EVENT_ID
//
// A command that fails answers 500, so modelreg retries the delivery
// later (with backoff); one that succeeds answers 204. Subscribe it in
// modelreg serve's configuration (docs/events.md):
//
//	events:
//	  subscriptions:
//	    - name: deploy
//	      url: http://127.0.0.1:8090/hook
//	      types: [stage.moved]
//	      secretFile: /etc/modelreg/deploy.secret
//
// and run it:
//
//	deploy-on-promotion --secret-file /etc/modelreg/deploy.secret \
//	  --state /var/lib/deploy/handled --command 'kubectl set env deploy/fraud MODEL_DIGEST=$MODELREG_DIGEST'
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/modelreg/modelreg/pkg/event"
	"github.com/modelreg/modelreg/pkg/wire"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to receive deliveries on")
	secretFile := flag.String("secret-file", "", "file holding the subscription's secret (required)")
	stage := flag.String("stage", "production", "deploy when this stage moves")
	repos := flag.String("repository", "**", "only for repositories matching this pattern (team/* one segment, team/** any depth)")
	command := flag.String("command", "", "deploy command, run with sh -c and the event in its environment (required)")
	state := flag.String("state", "", "file of handled event ids, so a redelivery does not deploy twice (default: in memory only)")
	timeout := flag.Duration("timeout", 10*time.Minute, "how long a deploy may run")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *secretFile == "" || *command == "" {
		fmt.Fprintln(os.Stderr, "deploy-on-promotion: --secret-file and --command are required; see -h")
		os.Exit(2)
	}
	b, err := os.ReadFile(*secretFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy-on-promotion:", err)
		os.Exit(2)
	}
	h := &handler{secret: []byte(strings.TrimSpace(string(b))), stage: *stage, repos: *repos, command: *command,
		timeout: *timeout, log: log, handled: map[string]bool{}}
	if *state != "" {
		if err := h.load(*state); err != nil {
			fmt.Fprintln(os.Stderr, "deploy-on-promotion:", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("receiving modelreg events", "listen", *listen, "stage", *stage, "repository", *repos)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "deploy-on-promotion:", err)
		os.Exit(1)
	}
}

type handler struct {
	secret  []byte
	stage   string
	repos   string
	command string
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex // one deploy at a time, in arrival order
	handled map[string]bool
	state   *os.File
}

// load reads the ids handled before and keeps the file open to append.
func (h *handler) load(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		h.handled[strings.TrimSpace(sc.Text())] = true
	}
	h.state = f
	return sc.Err()
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST modelreg events here", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := event.Verify(h.secret, r.Header.Get(event.SignatureHeader), body, time.Now(), event.DefaultTolerance); err != nil {
		h.log.Warn("refused a delivery", "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	e, err := event.Decode(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d := e.Data
	if match, _ := doublestar.Match(h.repos, d.Repository); e.Type != wire.EventStageMoved || d.Stage != h.stage || d.Digest == "" || !match {
		w.WriteHeader(http.StatusNoContent) // not ours: taken, nothing to do
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.handled[e.ID] {
		h.log.Info("a redelivery of a handled event", "id", e.ID)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.log.Info("deploying", "repository", d.Repository, "stage", d.Stage, "digest", d.Digest, "kind", d.Kind, "actor", d.Actor)
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", h.command)
	cmd.Env = append(os.Environ(),
		"MODELREG_REPOSITORY="+d.Repository, "MODELREG_STAGE="+d.Stage, "MODELREG_DIGEST="+d.Digest,
		"MODELREG_PREVIOUS="+d.Previous, "MODELREG_KIND="+d.Kind, "MODELREG_ACTOR="+d.Actor,
		"MODELREG_REASON="+d.Reason, "MODELREG_RECORD="+d.Record, "MODELREG_EVENT_ID="+e.ID)
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.log.Error("the deploy command failed; modelreg will deliver the event again", "err", err, "output", string(out))
		http.Error(w, "deploy failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h.handled[e.ID] = true
	if h.state != nil {
		if _, err := fmt.Fprintln(h.state, e.ID); err != nil {
			h.log.Error("recording a handled event", "err", err)
		}
	}
	h.log.Info("deployed", "digest", d.Digest, "output", strings.TrimSpace(string(out)))
	w.WriteHeader(http.StatusNoContent)
}
