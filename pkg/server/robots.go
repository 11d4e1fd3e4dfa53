package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/wire"
)

var (
	robotsRE    = regexp.MustCompile(`^robots(?:/([a-z0-9][a-z0-9._-]{0,63}))?$`)
	robotNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// robots serves the robot accounts' routes of the model API: GET robots
// (list), POST robots (create; the answer holds the secret, once) and
// DELETE robots/NAME (revoke). Each needs admin on every repository
// pattern the account covers, so a team's admin manages its own robots.
func (rt *router) robots(w http.ResponseWriter, r *http.Request, name string) {
	id := identityOf(r.Context())
	if id == nil {
		serveError(w, errUnsupported, "robot accounts need an access policy: start modelreg serve with --access FILE (docs/access.md)")
		return
	}
	switch {
	case r.Method == http.MethodGet && name == "":
		rt.listRobots(w, r, id)
	case r.Method == http.MethodPost && name == "":
		rt.createRobot(w, r, id)
	case r.Method == http.MethodDelete && name != "":
		rt.revokeRobot(w, r, id, name)
	default:
		serveError(w, errUnsupported, "robot routes: GET robots, POST robots, DELETE robots/NAME")
	}
}

// administers reports whether id may manage an account covering patterns:
// admin on each pattern (the pattern itself read as a repository name, so
// admin on team/** covers team/* and team/**, and only ** covers **).
func administers(id *identity, patterns []string) bool {
	for _, p := range patterns {
		if !id.may(p, access.Admin) {
			return false
		}
	}
	return len(patterns) > 0
}

func (rt *router) createRobot(w http.ResponseWriter, r *http.Request, id *identity) {
	var req wire.RobotRequest
	if err := decodeBody(r, &req); err != nil {
		rt.apiError(w, err)
		return
	}
	if !robotNameRE.MatchString(req.Name) {
		serveError(w, errQueryInvalid, fmt.Sprintf("robot name %q: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64", req.Name))
		return
	}
	grant := access.Grant{Repositories: req.Repositories}
	for _, a := range req.Actions {
		grant.Actions = append(grant.Actions, access.Action(strings.TrimSpace(a)))
	}
	if err := grant.Check(); err != nil {
		serveError(w, errQueryInvalid, "robot "+req.Name+": "+err.Error())
		return
	}
	if !administers(id, grant.Repositories) {
		rt.guard.refuse(w, r, id, strings.Join(grant.Repositories, ","), access.Admin,
			fmt.Sprintf("%s may not create a robot for %s: that needs admin on each repository pattern", id.subject, strings.Join(grant.Repositories, ", ")))
		return
	}
	now := time.Now().UTC()
	var expires time.Time
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 {
			serveError(w, errQueryInvalid, fmt.Sprintf("expires %q: a positive Go duration, e.g. 720h", req.Expires))
			return
		}
		expires = now.Add(d)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		rt.apiError(w, err)
		return
	}
	secret := "mrr_" + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(secret))
	g, _ := json.Marshal(grant)
	err := rt.idx.PutRobot(r.Context(), index.Robot{Name: req.Name, SecretHash: "sha256:" + hex.EncodeToString(sum[:]), Grant: g,
		Description: req.Description, Created: now, CreatedBy: id.subject.String(), Expires: expires})
	if errors.Is(err, index.ErrRobotExists) {
		serveError(w, errDenied, fmt.Sprintf("a robot named %q exists (names are never reused, even after a revocation): pick another name", req.Name))
		return
	}
	if err != nil {
		rt.apiError(w, err)
		return
	}
	rt.log.Info("robot account created", "robot", req.Name, "by", id.subject.String(), "repositories", grant.Repositories, "actions", grant.Actions, "expires", expires)
	out := robotRow(index.Robot{Name: req.Name, Grant: g, Description: req.Description, Created: now, CreatedBy: id.subject.String(), Expires: expires}, now)
	out.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	writeJSONAs(w, http.StatusCreated, "application/json", out)
}

func robotRow(rb index.Robot, now time.Time) wire.Robot {
	var g access.Grant
	json.Unmarshal(rb.Grant, &g)
	out := wire.Robot{Name: rb.Name, Username: RobotPrefix + rb.Name, Repositories: g.Repositories, Description: rb.Description,
		Created: rb.Created, CreatedBy: rb.CreatedBy, Expires: rb.Expires, Revoked: rb.Revoked, LastUsed: rb.LastUsed, State: "active"}
	for _, a := range g.Actions {
		out.Actions = append(out.Actions, string(a))
	}
	switch {
	case !rb.Revoked.IsZero():
		out.State = "revoked"
	case !rb.Expires.IsZero() && now.After(rb.Expires):
		out.State = "expired"
	}
	return out
}

func (rt *router) listRobots(w http.ResponseWriter, r *http.Request, id *identity) {
	rbs, err := rt.idx.Robots(r.Context())
	if err != nil {
		rt.apiError(w, err)
		return
	}
	out := wire.Robots{Robots: []wire.Robot{}}
	now := time.Now()
	for _, rb := range rbs {
		row := robotRow(rb, now)
		if administers(id, row.Repositories) {
			out.Robots = append(out.Robots, row)
		}
	}
	writeJSON(w, out)
}

func (rt *router) revokeRobot(w http.ResponseWriter, r *http.Request, id *identity, name string) {
	rb, ok, err := rt.idx.GetRobot(r.Context(), name)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	if !ok {
		serveError(w, errNameUnknown, fmt.Sprintf("no robot named %q", name))
		return
	}
	row := robotRow(rb, time.Now())
	if !administers(id, row.Repositories) {
		rt.guard.refuse(w, r, id, strings.Join(row.Repositories, ","), access.Admin, fmt.Sprintf("%s may not revoke robot %s: that needs admin on each of its repository patterns", id.subject, name))
		return
	}
	if _, err := rt.idx.RevokeRobot(r.Context(), name); err != nil {
		rt.apiError(w, err)
		return
	}
	rt.log.Info("robot account revoked", "robot", name, "by", id.subject.String())
	rb, _, _ = rt.idx.GetRobot(r.Context(), name)
	writeJSON(w, robotRow(rb, time.Now()))
}
