// Package modelapi is the client of modelreg serve's model API
// (/v2/_modelreg/v1/, docs/api.md): one request where a plain registry
// needs a manifest fetch per version.
package modelapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/wire"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// ErrNoServer means the registry does not serve the model API.
var ErrNoServer = errors.New("the registry is not modelreg serve")

// Client calls one registry's model API.
type Client struct {
	base string
	http interface {
		Do(*http.Request) (*http.Response, error)
	}
	host string
	// cred gives the user's credentials for host: sent with every
	// request, as the model API's answers (lists, searches) depend on
	// who asks, and a server answers an anonymous list with what
	// anonymous may read instead of a challenge.
	cred auth.CredentialFunc
}

// New connects to host's model API, or returns ErrNoServer.
func New(ctx context.Context, o remote.Options, host string) (*Client, error) {
	if !o.HasModelregExtension(ctx, host) {
		return nil, fmt.Errorf("%s: %w", host, ErrNoServer)
	}
	c, err := o.Client(host)
	if err != nil {
		return nil, err
	}
	return &Client{base: o.Scheme(host) + "://" + host + wire.Prefix, http: c, host: host, cred: c.Credential}, nil
}

// QueryError is the server's answer to a malformed query.
type QueryError struct {
	Message  string
	Position int
}

func (e *QueryError) Error() string { return e.Message }

func (c *Client) get(ctx context.Context, path string, params url.Values, out any) error {
	u := c.base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	return c.do(req, path, out)
}

// post sends in as JSON and decodes the answer into out; header adds
// headers (the actor).
func (c *Client) post(ctx context.Context, path string, in any, header http.Header, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, path, out)
}

func (c *Client) do(req *http.Request, path string, out any) error {
	if c.cred != nil && req.Header.Get("Authorization") == "" {
		if cr, err := c.cred(req.Context(), c.host); err == nil && cr.Username != "" && cr.Password != "" {
			req.SetBasicAuth(cr.Username, cr.Password)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		var e struct {
			Errors []struct {
				Code    string           `json:"code"`
				Message string           `json:"message"`
				Detail  wire.QueryDetail `json:"detail"`
			} `json:"errors"`
		}
		if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
			if e.Errors[0].Code == wire.CodeQueryInvalid {
				return &QueryError{Message: e.Errors[0].Message, Position: e.Errors[0].Detail.Position}
			}
			return fmt.Errorf("model API %s: %d %s: %s", path, resp.StatusCode, e.Errors[0].Code, e.Errors[0].Message)
		}
		return fmt.Errorf("model API %s: %s", path, resp.Status)
	}
	return json.Unmarshal(body, out)
}

// Search runs a query (docs/api.md) and returns one page of versions.
func (c *Client) Search(ctx context.Context, q, orderBy string, limit, offset int) ([]wire.VersionRow, error) {
	var out wire.Versions
	p := url.Values{"q": {q}, "limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	if orderBy != "" {
		p.Set("order_by", orderBy)
	}
	return out.Versions, c.get(ctx, "search", p, &out)
}

// Versions returns every version of a repository, newest first.
func (c *Client) Versions(ctx context.Context, repo string) ([]wire.VersionRow, error) {
	var all []wire.VersionRow
	for offset := 0; ; offset += 1000 {
		var page wire.Versions
		if err := c.get(ctx, "models/"+repo+"/versions", url.Values{"limit": {"1000"}, "offset": {strconv.Itoa(offset)}}, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Versions...)
		if len(page.Versions) < 1000 {
			return all, nil
		}
	}
}

// Image returns the image view the server serves for the version ref (a
// tag or digest) of repo.
func (c *Client) Image(ctx context.Context, repo, ref string) (wire.ImageView, error) {
	var out wire.ImageView
	return out, c.get(ctx, "models/"+repo+"/versions/"+ref+"/image", nil, &out)
}

// Modelcar returns the modelcar the server serves for the version ref of
// repo (its base image under the version's files).
func (c *Client) Modelcar(ctx context.Context, repo, ref string) (wire.ImageView, error) {
	var out wire.ImageView
	return out, c.get(ctx, "models/"+repo+"/versions/"+ref+"/modelcar", nil, &out)
}

// Descendants lists the versions made directly from of (a model digest or
// reference, or a dataset URI or digest).
func (c *Client) Descendants(ctx context.Context, of string) ([]wire.Edge, error) {
	var out wire.Descendants
	return out.Descendants, c.get(ctx, "lineage/descendants", url.Values{"of": {of}}, &out)
}

// History returns a stage's history as the server keeps it: only records
// signed by the server's key (and the older records an anchor adopted),
// newest first. Records a client wrote are not part of it.
func (c *Client) History(ctx context.Context, repo, stage string) ([]promotion.Record, error) {
	var out wire.History
	return out.Records, c.get(ctx, "models/"+repo+"/stages/"+stage+"/history", nil, &out)
}

// Copied returns the histories of a stage at other registries, as copied
// into this one: records the server did not sign into the stage's chain,
// one history per origin, trusted when a key its policy lists signed them.
func (c *Client) Copied(ctx context.Context, repo, stage string) ([]promotion.Copied, error) {
	var out wire.CopiedHistory
	return out.Sources, c.get(ctx, "models/"+repo+"/stages/"+stage+"/copied", nil, &out)
}

// ServerKey returns the public key the server signs its records with, as
// published on its status endpoint. Trusting it on first use is weaker than
// pinning it: `history --verify --server-key FILE` does that.
func (c *Client) ServerKey(ctx context.Context) (ed25519.PublicKey, error) {
	var out wire.Status
	if err := c.get(ctx, "status", nil, &out); err != nil {
		return nil, err
	}
	return promotion.ParsePublicPEM([]byte(out.ServerKey))
}

// GC asks the server to apply its retention rules and collect
// unreferenced blobs (or, with DryRun, to say what that would do).
func (c *Client) GC(ctx context.Context, req wire.GCRequest, header http.Header) (wire.GCReport, error) {
	var out wire.GCReport
	err := c.post(ctx, "gc", req, header, &out)
	return out, err
}

// Takedown asks the server to take a version down: an admin's deletion
// that also removes its weights (docs/lifecycle.md).
func (c *Client) Takedown(ctx context.Context, repo, ref, reason string, header http.Header) (wire.Takedown, error) {
	var out wire.Takedown
	err := c.post(ctx, "models/"+repo+"/versions/"+url.PathEscape(ref)+"/takedown", wire.TakedownRequest{Reason: reason}, header, &out)
	return out, err
}

// CreateRobot creates a robot account; the answer holds its secret, once.
func (c *Client) CreateRobot(ctx context.Context, req wire.RobotRequest) (wire.Robot, error) {
	var out wire.Robot
	err := c.post(ctx, "robots", req, nil, &out)
	return out, err
}

// Robots lists the robot accounts the caller administers.
func (c *Client) Robots(ctx context.Context) ([]wire.Robot, error) {
	var out wire.Robots
	err := c.get(ctx, "robots", nil, &out)
	return out.Robots, err
}

// RevokeRobot revokes a robot account.
func (c *Client) RevokeRobot(ctx context.Context, name string) (wire.Robot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+"robots/"+url.PathEscape(name), nil)
	if err != nil {
		return wire.Robot{}, err
	}
	var out wire.Robot
	err = c.do(req, "robots/"+name, &out)
	return out, err
}

// Events lists a page of the event log, oldest first, after seq.
func (c *Client) Events(ctx context.Context, repo, typ string, after int64) (wire.Events, error) {
	q := url.Values{"n": {"1000"}, "after": {strconv.FormatInt(after, 10)}}
	if repo != "" {
		q.Set("repository", repo)
	}
	if typ != "" {
		q.Set("type", typ)
	}
	var out wire.Events
	err := c.get(ctx, "events", q, &out)
	return out, err
}
