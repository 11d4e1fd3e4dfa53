package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
)

// need checks that the request may do a on repo, and answers the refusal
// (recorded) when it may not. Without an access policy it always passes:
// the authenticator applied the htpasswd roles already.
func (rt *router) need(w http.ResponseWriter, r *http.Request, repo string, a access.Action) bool {
	id := identityOf(r.Context())
	if id == nil || id.may(repo, a) {
		return true
	}
	rt.guard.refuse(w, r, id, repo, a, "")
	return false
}

// needAny is need for a request any of several rights allows (a blob
// upload serves a version's push as well as a signature's).
func (rt *router) needAny(w http.ResponseWriter, r *http.Request, repo string, as ...access.Action) bool {
	id := identityOf(r.Context())
	if id == nil {
		return true
	}
	for _, a := range as {
		if id.may(repo, a) {
			return true
		}
	}
	rt.guard.refuse(w, r, id, repo, as[0], fmt.Sprintf("%s may not write to %s (needs %s)", id.subject, modelOf(repo), joinActions(as)))
	return false
}

func joinActions(as []access.Action) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = string(a)
	}
	return strings.Join(s, " or ")
}

// writeRight is the right a manifest write needs: sign for a referrer
// (a manifest with a subject, or cosign's legacy sha256-….sig/.att tag),
// promote:STAGE for a protected stage, push otherwise (versions, and tags
// no stage rule protects: latest, dev).
func (rt *router) writeRight(r *http.Request, t string, m index.Manifest) access.Action {
	switch {
	case m.Subject != "" || legacyReferrerTag(t):
		return access.Sign
	case t != "" && tag.Classify(t) == tag.Stage && rt.protected(r.Context(), t):
		return access.Promote(t)
	}
	return access.Push
}

// deleteRight is the right a manifest DELETE needs: promote:STAGE to
// empty a protected stage, push for another movable tag, delete for a
// version (by tag or digest).
func (rt *router) deleteRight(r *http.Request, ref string) access.Action {
	if tag.Classify(ref) == tag.Stage {
		if rt.protected(r.Context(), ref) {
			return access.Promote(ref)
		}
		return access.Push
	}
	return access.Delete
}

// protected reports whether a stage needs a promote right to move: the
// trust policy gates it, or the access policy names it.
func (rt *router) protected(ctx context.Context, stage string) bool {
	if id := identityOf(ctx); id != nil && id.policy.Protected(stage) {
		return true
	}
	if p := rt.gate.policy(); p != nil {
		_, ok := p.Stage(stage)
		return ok
	}
	return false
}

func legacyReferrerTag(t string) bool {
	rest, ok := strings.CutPrefix(t, "sha256-")
	return ok && (strings.HasSuffix(rest, ".sig") || strings.HasSuffix(rest, ".att"))
}

// denied records a refused request: the log (actor, route, right,
// reason), the denials counter, and for a stage a promotion.refused event.
func (rt *router) denied(ctx context.Context, r *http.Request, repo string, a access.Action, why string) {
	actor := "anonymous"
	if id := identityOf(ctx); id != nil {
		actor = id.subject.String()
	}
	rt.log.Warn("request refused", "actor", actor, "method", r.Method, "path", r.URL.Path, "right", string(a), "repo", repo, "reason", why)
	metricDenials.WithLabelValues("access", kindOf(a)).Inc()
	if stage, ok := strings.CutPrefix(string(a), "promote:"); ok && rt.idx != nil {
		rt.refused(index.WithActor(ctx, actor), modelOf(repo), stage, digest.Digest(r.Header.Get(headerDigestHint)), why, "")
	}
}

// headerDigestHint carries, inside the server, the digest a refused stage
// write named, for its event.
const headerDigestHint = "X-Modelreg-Refused-Digest"

func kindOf(a access.Action) string {
	if strings.HasPrefix(string(a), "promote:") {
		return "promote"
	}
	return string(a)
}

// answerKey is what makes a cached model API answer one subject's: the
// lists it filters by read rights differ per subject and policy.
func answerKey(ctx context.Context) string {
	id := identityOf(ctx)
	if id == nil {
		return ""
	}
	return id.subject.String() + "|" + strings.Join(id.subject.Groups, ",") + "|" + id.policy.Digest + "\x00"
}

// readable reports whether the request may read repo (model lists and
// searches keep only those).
func readable(ctx context.Context, repo string) bool {
	return Allowed(ctx, repo, access.Pull)
}

// filterCatalog serves /v2/_catalog with only the repositories the
// request may pull.
func (rt *router) filterCatalog(w http.ResponseWriter, r *http.Request) {
	c := newCapture()
	rt.next.ServeHTTP(c, r)
	if c.code() != http.StatusOK {
		c.replay(w)
		return
	}
	var body struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(c.body.Bytes(), &body); err != nil {
		c.replay(w)
		return
	}
	kept := []string{}
	for _, name := range body.Repositories {
		if readable(r.Context(), name) {
			kept = append(kept, name)
		}
	}
	b, _ := json.Marshal(map[string][]string{"repositories": kept})
	c.body.Reset()
	c.body.Write(b)
	c.header.Del("Content-Length")
	c.replay(w)
}

// readableModels pages through the model list keeping what ctx may read,
// until n rows or the end: a page is full whenever more readable rows
// exist, so clients that stop at a short page miss nothing.
func readableModels(ctx context.Context, fetch func(last string, n int) ([]wire.ModelRow, error), last string, n int) ([]wire.ModelRow, error) {
	if identityOf(ctx) == nil {
		return fetch(last, n)
	}
	out := []wire.ModelRow{}
	for len(out) < n {
		rows, err := fetch(last, n)
		if err != nil {
			return nil, err
		}
		for _, m := range rows {
			if len(out) < n && readable(ctx, m.Repository) {
				out = append(out, m)
			}
		}
		if len(rows) < n {
			break
		}
		last = rows[len(rows)-1].Repository
	}
	return out, nil
}

// readableVersions is a search's page (offset, limit) counted among the
// rows ctx may read.
func readableVersions(ctx context.Context, fetch func(offset, limit int) ([]wire.VersionRow, error), offset, limit int) ([]wire.VersionRow, error) {
	if identityOf(ctx) == nil {
		return fetch(offset, limit)
	}
	var kept []wire.VersionRow
	const batch = 1000
	for at := 0; len(kept) < offset+limit; at += batch {
		rows, err := fetch(at, batch)
		if err != nil {
			return nil, err
		}
		for _, v := range rows {
			if readable(ctx, v.Repository) {
				kept = append(kept, v)
			}
		}
		if len(rows) < batch {
			break
		}
	}
	if offset >= len(kept) {
		return []wire.VersionRow{}, nil
	}
	return kept[offset:min(len(kept), offset+limit)], nil
}

// mayWriteRepo reports whether ctx has some write right on repo: what the
// web UI asks before offering a button (the move itself is decided by the
// router, with the exact right).
func mayWriteRepo(ctx context.Context, repo string) bool {
	id := identityOf(ctx)
	return id == nil || id.mayWrite(repo)
}
