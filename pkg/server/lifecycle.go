package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/retention"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
)

// lifecycle applies the retention rules and collects blobs
// (docs/lifecycle.md): on a schedule (retention.interval) and when asked
// (POST gc, `modelreg gc`). Every deletion is the gate's recorded one, a
// signed tombstone with the rule as its reason, made by an in-process
// DELETE like a client's `modelreg delete`.
type lifecycle struct {
	rt  *router
	cfg config.Retention
	idx *index.Index
	st  *store
	gc  *collector
	log *slog.Logger
	// busy admits one run at a time.
	busy sync.Mutex
}

// errBusy answers a run asked while one is going on.
var errBusy = errors.New("retention and collection are already running; try again when they are done")

// run applies the rules (only deciding, in a dry run) and collects.
// asked names who asked, for the log ("" for the schedule).
func (l *lifecycle) run(ctx context.Context, req wire.GCRequest, asked string) (wire.GCReport, error) {
	if req.Repositories != "" && !doublestar.ValidatePattern(req.Repositories) {
		return wire.GCReport{}, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("repositories %q: not a pattern (team/* is one path segment, team/** any depth)", req.Repositories)}
	}
	if !l.busy.TryLock() {
		return wire.GCReport{}, errBusy
	}
	defer l.busy.Unlock()
	start := time.Now()
	rep := wire.GCReport{DryRun: req.DryRun, Repositories: req.Repositories, Versions: []wire.GCVersion{}, Grace: config.Duration(l.gc.grace).String(), Started: start.UTC()}
	plan, err := l.plan(ctx, req.Repositories, start)
	if err != nil {
		return rep, fmt.Errorf("deciding what the retention rules let go: %w", err)
	}
	without := map[string]bool{}
	for _, d := range plan {
		if d.Keep {
			rep.Kept++
			continue
		}
		v := wire.GCVersion{Repository: d.Repository, Digest: d.Digest, Tags: nonNil(d.Tags), Reason: d.Why}
		if req.DryRun {
			without[d.Repository+"@"+d.Digest] = true
		} else if err := l.delete(ctx, d.Repository, d.Digest, d.Why); err != nil {
			v.Error = err.Error()
			l.log.Warn("retention: a version was not deleted", "repo", d.Repository, "digest", d.Digest, "err", err)
		}
		rep.Versions = append(rep.Versions, v)
	}
	res, err := l.gc.collect(ctx, without, req.DryRun)
	if err != nil {
		return rep, fmt.Errorf("collecting blobs: %w", err)
	}
	rep.Manifests, rep.Blobs, rep.Bytes, rep.YoungBlobs, rep.YoungBytes = res.Manifests, res.Blobs, res.Bytes, res.Young, res.YoungBytes
	rep.Seconds = time.Since(start).Seconds()
	who := asked
	if who == "" {
		who = "schedule"
	}
	l.log.Info("retention and collection", "dry_run", req.DryRun, "asked_by", who, "versions", len(rep.Versions), "kept", rep.Kept,
		"blobs", rep.Blobs, "bytes", rep.Bytes, "young_blobs", rep.YoungBlobs, "seconds", rep.Seconds)
	return rep, nil
}

// plan gathers the versions (from the index; push times from storage)
// and decides them.
func (l *lifecycle) plan(ctx context.Context, only string, now time.Time) ([]retention.Decision, error) {
	held, err := l.idx.HeldVersions(ctx)
	if err != nil {
		return nil, err
	}
	vs := make([]retention.Version, 0, len(held))
	for _, h := range held {
		pushed, err := l.st.pushed(ctx, h.Repo, h.Digest)
		if err != nil {
			return nil, err
		}
		vs = append(vs, retention.Version{Repository: h.Repo, Digest: h.Digest.String(), Tags: h.Versions, Pushed: pushed,
			Stages: h.Stages, EverIn: h.EverIn, Inputs: h.Inputs})
	}
	return retention.Plan(l.cfg, vs, only, now), nil
}

// delete is `modelreg delete` from inside: the gate checks again (a
// version promoted since the plan is refused) and records a tombstone
// whose reason is the rule.
func (l *lifecycle) delete(ctx context.Context, repo, dg, reason string) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/v2/"+repo+"/manifests/"+dg, nil)
	if err != nil {
		return err
	}
	r.RequestURI = r.URL.RequestURI()
	r.RemoteAddr = "127.0.0.1:0"
	r.Header.Set("User-Agent", "modelreg serve (retention)")
	r.Header.Set(mediatypes.HeaderActor, "modelreg serve (retention)")
	r.Header.Set(mediatypes.HeaderReason, reason)
	rec := newCapture()
	l.rt.deleteAs(rec, r, repo, dg, false)
	if rec.code() != http.StatusAccepted {
		return fmt.Errorf("%d: %s", rec.code(), errorMessage(rec.body.Bytes()))
	}
	return nil
}

// schedule runs the rules and a collection every interval until ctx ends.
func (l *lifecycle) schedule(ctx context.Context) {
	if l.cfg.Interval <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(l.cfg.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := l.run(ctx, wire.GCRequest{}, ""); err != nil {
				l.log.Error("scheduled retention and collection", "err", err)
			}
		}
	}
}

// apiGC is POST gc: any user who may write may ask (the authenticator
// refuses read-only and anonymous users before this runs).
func (rt *router) apiGC(w http.ResponseWriter, r *http.Request, _ []string) {
	var req wire.GCRequest
	if err := decodeBody(r, &req); err != nil {
		rt.apiError(w, err)
		return
	}
	// Blobs are collected registry-wide: with an access policy, gc is an
	// admin's of every repository ("**").
	if !rt.need(w, r, "**", access.Admin) {
		return
	}
	asked := User(r.Context())
	if asked == "" {
		asked = r.Header.Get(mediatypes.HeaderActor)
	}
	rep, err := rt.lifecycle.run(r.Context(), req, asked)
	if errors.Is(err, errBusy) || errors.Is(err, errCollecting) {
		w.Header().Set("Retry-After", "60")
		serveError(w, errTooMany, err.Error())
		return
	}
	if err != nil {
		rt.apiError(w, err)
		return
	}
	writeJSON(w, rep)
}

// apiTakedown is POST models/REPO/versions/REF/takedown: an admin's
// deletion of a version that may have been in a protected stage, which
// also removes its weights now; the tombstone (with the manifest) stays.
func (rt *router) apiTakedown(w http.ResponseWriter, r *http.Request, args []string) {
	repo, ref := args[0], args[1]
	if identityOf(r.Context()) != nil {
		if !rt.need(w, r, repo, access.Admin) {
			return
		}
	} else if rt.admin == nil || !rt.admin(r) {
		u := User(r.Context())
		serveError(w, errDenied, fmt.Sprintf("user %q is not an admin: a takedown removes a version that was in production; start modelreg serve with --admin-user NAME to allow NAME", u))
		return
	}
	var req wire.TakedownRequest
	if err := decodeBody(r, &req); err != nil {
		rt.apiError(w, err)
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		serveError(w, errQueryInvalid, `a takedown needs a reason ({"reason": "…"}): the tombstone is what the history keeps of the version`)
		return
	}
	ctx := r.Context()
	d, err := rt.resolve(ctx, repo, ref)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	_, raw, ok, err := rt.gate.st.manifest(ctx, repo, d)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	if !ok {
		serveError(w, errManifestUnknown, fmt.Sprintf("%s@%s is not in the registry (deleted already?)", repo, d))
		return
	}
	del, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/v2/"+repo+"/manifests/"+d.String(), nil)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	del.RequestURI = del.URL.RequestURI()
	del.RemoteAddr = r.RemoteAddr
	del.Header.Set("User-Agent", r.UserAgent())
	del.Header.Set(mediatypes.HeaderActor, r.Header.Get(mediatypes.HeaderActor))
	del.Header.Set(mediatypes.HeaderReason, req.Reason)
	rec := newCapture()
	rt.deleteAs(rec, del, repo, d.String(), true)
	if rec.code() != http.StatusAccepted {
		rec.replay(w)
		return
	}
	res, err := rt.gc.takedown(context.WithoutCancel(ctx), raw)
	if err != nil {
		rt.log.Error("takedown: the version is deleted (tombstone written) but removing its blobs failed; the next collection removes them", "repo", repo, "digest", d, "err", err)
		serveError(w, errUnknown, fmt.Sprintf("the version is deleted and its tombstone written, but removing its blobs failed: %v; run `modelreg gc` to finish", err))
		return
	}
	out := wire.Takedown{Repository: repo, Digest: d.String(), Blobs: res.Blobs, Bytes: res.Bytes, Shared: []string{}}
	for _, s := range res.Spared {
		out.Shared = append(out.Shared, s.String())
	}
	rt.log.Warn("version taken down", "repo", repo, "digest", d, "actor", rt.gate.actor(del), "blobs", res.Blobs, "bytes", res.Bytes, "shared", len(out.Shared))
	writeJSON(w, out)
}

// decodeBody reads a small JSON body (an empty body is the zero value).
func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{code: errQueryInvalid, msg: "the body must be JSON as docs/api.md shows: " + err.Error()}
	}
	return nil
}

// pushed is when storage took a manifest: the time its revision link was
// written, which a rebuild of the index does not change.
func (s *store) pushed(ctx context.Context, repo string, d digest.Digest) (time.Time, error) {
	fi, err := s.driver.Stat(ctx, "/docker/registry/v2/repositories/"+repo+"/_manifests/revisions/"+d.Algorithm().String()+"/"+d.Encoded()+"/link")
	if isPathNotFound(err) {
		return time.Now(), nil // deleted meanwhile: the gate will say so
	}
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
