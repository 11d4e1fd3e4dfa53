package server

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/modelreg/modelreg/pkg/ui"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// csrfCookie holds the web UI's anti-forgery token: a form that moves a
// stage carries the same value in a hidden field, which a page of another
// site can neither read nor guess (double submit), and the cookie is
// SameSite=Strict, so another site's form does not even send it.
const csrfCookie = "modelreg_csrf"

// csrfToken returns the request's token, setting a new cookie if it has
// none.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 64 {
		return c.Value
	}
	var b [32]byte
	rand.Read(b[:])
	v := hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return v
}

// checkCSRF refuses a form post another site could have made: without
// the cookie's token in the form, or from another origin.
func checkCSRF(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return fmt.Errorf("a form posted from %s, not from this registry's pages", o)
		}
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) != 64 || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		return errors.New("the form's anti-forgery token is missing or wrong: reload the page and try again")
	}
	return nil
}

// movePage confirms (GET) or makes (POST) a promotion or a rollback.
// A move goes through the router like any client's tag write, so the gate
// and the record are exactly those of `modelreg promote`; the actor is
// the logged-in user.
func (rt *router) movePage(w http.ResponseWriter, r *http.Request, repo string, rollback bool) (any, error) {
	if !validRepoName(repo) {
		return nil, &apiError{code: errNameInvalid, msg: "not a repository name: " + repo}
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := checkCSRF(r); err != nil {
			return nil, &apiError{code: errDenied, msg: err.Error()}
		}
	}
	stage := r.FormValue("stage")
	if err := tag.ValidateStage(stage); err != nil {
		return nil, &apiError{code: errNameInvalid, msg: err.Error()}
	}
	ctx := r.Context()
	pg := ui.MovePage{Title: repo + ": " + stage, Repository: repo, Stage: stage, Rollback: rollback, MayWrite: MayWrite(ctx) && (!rt.protected(ctx, stage) && mayWriteRepo(ctx, repo) || Allowed(ctx, repo, access.Promote(stage))), CSRF: csrfToken(w, r)}
	cur, ok, err := rt.gate.st.tag(ctx, repo, stage)
	if err != nil {
		return nil, err
	}
	if ok {
		pg.Current = cur.Digest.String()
	}
	target := r.FormValue("version")
	if rollback {
		if !ok {
			return nil, &apiError{code: errNameUnknown, msg: fmt.Sprintf("%s holds nothing: nothing to roll back", stage)}
		}
		h, err := rt.apiHistory(apiRequest{ctx: ctx, args: []string{repo, stage}, query: url.Values{}})
		if err != nil {
			return nil, err
		}
		recs := h.(wire.History).Records
		i := slices.IndexFunc(recs, func(rec promotion.Record) bool { return rec.Digest == pg.Current })
		if i < 0 || recs[i].Previous == "" {
			return nil, &apiError{code: errNameUnknown, msg: fmt.Sprintf("%s has no earlier version to roll back to", stage)}
		}
		if r.Method == http.MethodPost && target != recs[i].Previous {
			return nil, &apiError{code: errDenied, msg: "the stage moved since the page was shown: review the rollback again"}
		}
		target = recs[i].Previous
	}
	v, err := rt.apiVersion(apiRequest{ctx: ctx, args: []string{repo, target}, query: url.Values{}})
	if err != nil {
		return nil, err
	}
	pg.Target = v.(wire.Version).Version
	if r.Method == http.MethodPost {
		return rt.move(r, pg)
	}
	if pol := rt.gate.policy(); pol != nil {
		if _, protected := pol.Stage(stage); protected {
			pg.Protected = true
			d, err := rt.gate.decide(ctx, pol, repo, stage, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(pg.Target.Digest)})
			if err != nil {
				return nil, err
			}
			pg.Allowed, pg.Missing = d.Allowed, d.Missing
			for _, a := range d.Approvers {
				pg.Approvers = append(pg.Approvers, a.Name)
			}
		}
	}
	return pg, nil
}

// move writes the stage tag through the router (gate, record, index) as
// the logged-in user, and reports what happened.
func (rt *router) move(r *http.Request, pg ui.MovePage) (any, error) {
	ctx := r.Context()
	d := digest.Digest(pg.Target.Digest)
	mt, payload, ok, err := rt.gate.st.manifest(ctx, pg.Repository, d)
	if err != nil || !ok {
		return nil, fmt.Errorf("reading %s: %v", d, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "/v2/"+pg.Repository+"/manifests/"+pg.Stage, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Host = r.Host
	req.Header.Set("Content-Type", mt)
	if reason := strings.TrimSpace(r.PostFormValue("reason")); reason != "" {
		req.Header.Set(mediatypes.HeaderReason, reason)
	}
	if pg.Rollback {
		req.Header.Set(mediatypes.HeaderRollback, "true")
	}
	res := newCapture()
	rt.ServeHTTP(res, req)
	switch code := res.code(); {
	case code == http.StatusCreated:
		verb := "promoted to"
		if pg.Rollback {
			verb = "rolled back to"
		}
		pg.Done = fmt.Sprintf("%s %s %s as %s.", pg.Stage, verb, d, User(ctx))
	default:
		pg.Refused = true
		pg.Done = "Refused: " + errorMessage(res.body.Bytes())
	}
	return pg, nil
}

// errorMessage is the message of a distribution-spec error body.
func errorMessage(b []byte) string {
	var e struct{ Errors []struct{ Message string } }
	if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
		return e.Errors[0].Message
	}
	return strings.TrimSpace(string(b))
}
