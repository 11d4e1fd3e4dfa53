package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/tag"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// internalHost names the server itself for in-process requests.
const internalHost = "modelreg.internal"

// gate holds the rules the server enforces on tag writes: immutable
// versions, and stage moves allowed only by the trust policy and recorded
// by the server, one at a time per tag.
type gate struct {
	policy *policy.Policy
	idx    *index.Index
	// self answers in-process requests (reading signatures, writing
	// records) with the same router, without auth: the same code
	// `modelreg promote` runs, over a transport that never leaves memory.
	self http.Handler

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// lock serializes writes to one tag of one repository.
func (g *gate) lock(repo, t string) func() {
	g.mu.Lock()
	m, ok := g.locks[repo+":"+t]
	if !ok {
		m = &sync.Mutex{}
		g.locks[repo+":"+t] = m
	}
	g.mu.Unlock()
	m.Lock()
	return m.Unlock
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	in := r.Clone(r.Context())
	in.RequestURI = r.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:0"
	if in.Body == nil {
		in.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, in)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// repository is an oras-go client of this server's repo, in process.
func (g *gate) repository(repo string) *remote.Repository {
	return &remote.Repository{
		Client:    &http.Client{Transport: handlerTransport{g.self}},
		Reference: registry.Reference{Registry: internalHost, Repository: repo},
		PlainHTTP: true,
	}
}

func isModel(m index.Manifest) bool { return mediatypes.IsModelArtifactType(m.ArtifactType) }

// denied is a refusal, sent as 403 DENIED.
type denied struct{ msg string }

func (d denied) Error() string { return d.msg }

// checkTagWrite decides a PUT of manifest m to tag t. It returns the digest
// the tag held before (for the record) and whether the server must record
// the move.
func (g *gate) checkTagWrite(ctx context.Context, repo, t string, m index.Manifest) (previous digest.Digest, record bool, decision *policy.Decision, err error) {
	previous, err = g.idx.Tag(ctx, repo, t)
	if err != nil {
		return "", false, nil, err
	}
	if previous == m.Digest {
		return previous, false, nil, nil // the same content again: idempotent
	}
	if tag.Classify(t) != tag.Stage {
		if previous == "" {
			return previous, false, nil, nil
		}
		old, ok, err := g.idx.Get(ctx, repo, previous)
		if err != nil {
			return "", false, nil, err
		}
		if ok && isModel(old) {
			return "", false, nil, denied{fmt.Sprintf("version %s:%s already exists with digest %s; versions are immutable: push under a new version tag", repo, t, previous)}
		}
		return previous, false, nil, nil
	}
	if !isModel(m) {
		return previous, false, nil, nil // not a model: plain OCI semantics
	}
	if g.policy == nil {
		return previous, true, nil, nil
	}
	subject := ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size}
	ev, err := g.policy.Gather(ctx, g.repository(repo), subject)
	if err != nil {
		return "", false, nil, fmt.Errorf("reading signatures, lineage and evaluations: %w", err)
	}
	d := g.policy.Evaluate(t, ev)
	if err := d.Err(); err != nil {
		return "", false, nil, denied{fmt.Sprintf("%s@%s may not enter %q: %v", repo, m.Digest, t, err)}
	}
	return previous, true, &d, nil
}

// checkDelete decides a DELETE of ref (tag or digest).
func (g *gate) checkDelete(ctx context.Context, repo, ref string) error {
	d, err := digest.Parse(ref)
	if err != nil {
		if tag.Classify(ref) == tag.Stage {
			if g.policy != nil {
				if _, protected := g.policy.Stages[ref]; protected {
					return denied{fmt.Sprintf("stage %q is protected by the trust policy and cannot be deleted; move it with `modelreg promote` or `modelreg rollback`", ref)}
				}
			}
			return nil
		}
		if d, err = g.idx.Tag(ctx, repo, ref); err != nil || d == "" {
			return err
		}
	}
	m, ok, err := g.idx.Get(ctx, repo, d)
	if err != nil || !ok || !isModel(m) {
		return err
	}
	tags, err := g.idx.TagsOf(ctx, repo, d)
	if err != nil {
		return err
	}
	var stages []string
	for _, t := range tags {
		if tag.Classify(t) == tag.Stage {
			stages = append(stages, t)
		}
	}
	if len(stages) > 0 {
		return denied{fmt.Sprintf("%s %s is in stage %s; promote another version or roll back first", repo, ref, strings.Join(stages, ", "))}
	}
	return nil
}

// record writes the promotion record of a move the server is about to
// make, and returns how to take it back if the move fails.
func (g *gate) record(ctx context.Context, r *http.Request, repo, stage string, m index.Manifest, previous digest.Digest, d *policy.Decision) (undo func(), err error) {
	rec := promotion.Record{
		Repository: r.Host + "/" + repo, Stage: stage, Digest: m.Digest.String(), Previous: previous.String(),
		Actor: actor(r), Time: time.Now().UTC(), Reason: r.Header.Get(mediatypes.HeaderReason),
		Rollback: r.Header.Get(mediatypes.HeaderRollback) == "true", Keys: []string{},
	}
	tags, err := g.idx.TagsOf(ctx, repo, m.Digest)
	if err != nil {
		return nil, err
	}
	for _, t := range tags {
		if tag.Classify(t) == tag.Version {
			rec.Version = append(rec.Version, t)
		}
	}
	if d != nil && d.Protected {
		for _, a := range d.Approvers {
			rec.Keys = append(rec.Keys, a.Fingerprint)
		}
		rec.Policy = g.policy.Digest
	}
	if rec.Reason == "" {
		rec.Reason = "tag moved by " + r.UserAgent()
	}
	self := g.repository(repo)
	desc, err := promotion.Write(ctx, self, ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size}, rec)
	if err != nil {
		return nil, err
	}
	return func() { self.Delete(context.WithoutCancel(ctx), desc) }, nil
}

// actor names who moved a stage: the authenticated user, else what the
// client claims, else the client's address.
func actor(r *http.Request) string {
	claimed := r.Header.Get(mediatypes.HeaderActor)
	if u := User(r.Context()); u != "" {
		if claimed != "" && claimed != u {
			return u + " (" + claimed + ")"
		}
		return u
	}
	if claimed != "" {
		return claimed
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	return "anonymous@" + host
}
