package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelreg/modelreg/pkg/signature"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/model"
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

// gate holds the rules the server enforces on every manifest write and
// delete, whatever the client: immutable version tags, stage moves allowed
// only by the trust policy and recorded by the server in a signed hash
// chain (the record is the commit point), append-only records, and
// recorded, restricted deletions.
type gate struct {
	policy func() *policy.Policy
	idx    *index.Index
	st     *store
	key    *promotion.ServerKey
	dec    *decoder
	log    *slog.Logger
	// self answers in-process reads (signatures, lineage, evaluations for
	// the policy) with the same router, without auth: the same code
	// `modelreg promote` runs, over a transport that never leaves memory.
	self http.Handler
	// views finds the image view the server derived from a version, whose
	// signatures approve the version too.
	views *views
	// clientAddr puts the client's address in the actor of anonymous moves.
	clientAddr bool

	mu    sync.Mutex
	locks map[string]*refLock
}

type refLock struct {
	sync.RWMutex
	users int
}

// get returns the lock of key k, counted as used until put.
func (g *gate) get(k string) *refLock {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.locks[k]
	if !ok {
		l = &refLock{}
		g.locks[k] = l
	}
	l.users++
	return l
}

// put drops a lock nobody holds or waits for, so the map stays small.
func (g *gate) put(k string, l *refLock) {
	g.mu.Lock()
	if l.users--; l.users == 0 {
		delete(g.locks, k)
	}
	g.mu.Unlock()
}

// lock serializes writes to one tag of one repository; writes to other
// tags go on in parallel. It shares the repository's lock with them, which
// lockRepo takes alone.
func (g *gate) lock(ctx context.Context, repo, t string) (func(), error) {
	rk, tk := repo, repo+":"+t
	r, l := g.get(rk), g.get(tk)
	r.RLock()
	l.Lock()
	local := func() {
		l.Unlock()
		r.RUnlock()
		g.put(tk, l)
		g.put(rk, r)
	}
	// Replicas on one PostgreSQL index serialize the same writes there
	// (nothing on SQLite, which one process owns).
	unlock, err := g.idx.LockTag(ctx, repo, t)
	if err != nil {
		local()
		return nil, err
	}
	return func() { unlock(); local() }, nil
}

// lockRepo excludes every tag write of a repository: a delete by digest
// removes every tag that points at the digest, so its check that no stage
// does must hold until it is done.
func (g *gate) lockRepo(ctx context.Context, repo string) (func(), error) {
	r := g.get(repo)
	r.Lock()
	local := func() {
		r.Unlock()
		g.put(repo, r)
	}
	unlock, err := g.idx.LockTags(ctx, repo)
	if err != nil {
		local()
		return nil, err
	}
	return func() { unlock(); local() }, nil
}

// repository is an oras-go client of this server's repo, in process.
func (g *gate) repository(repo string) *remote.Repository {
	return &remote.Repository{
		Client:    &http.Client{Transport: handlerTransport{g.self}},
		Reference: registry.Reference{Registry: internalHost, Repository: repo},
		PlainHTTP: true,
	}
}

// denied is a refusal, sent as 403 DENIED.
type denied struct{ msg string }

func (d denied) Error() string { return d.msg }

// invalid is a bad manifest, sent as 400 MANIFEST_INVALID.
type invalid struct{ msg string }

func (e invalid) Error() string { return e.msg }

// tagWrite is the gate's decision on a PUT to a tag.
type tagWrite struct {
	// record is true when the server must record the move (a model
	// entering a stage); previous is what the stage held.
	record   bool
	previous digest.Digest
	decision *policy.Decision
}

// checkTagWrite decides a PUT of manifest m (classified c) to tag t. It
// reads the tag from storage, the truth, not from the index.
func (g *gate) checkTagWrite(ctx context.Context, repo, t string, m index.Manifest) (tagWrite, error) {
	cur, had, err := g.st.tag(ctx, repo, t)
	if err != nil {
		return tagWrite{}, err
	}
	if had && cur.Digest == m.Digest {
		return tagWrite{}, nil // the same content again: idempotent
	}
	switch tag.Classify(t) {
	case tag.Version:
		if tomb, err := g.idx.Retired(ctx, repo, t); err != nil {
			return tagWrite{}, err
		} else if tomb != "" {
			return tagWrite{}, denied{fmt.Sprintf("version %s:%s was deleted (tombstone %s) and a deleted version tag is never reused; push under a new version tag", repo, t, tomb)}
		}
		if had {
			return tagWrite{}, denied{fmt.Sprintf("version %s:%s already exists with digest %s; versions are immutable: push under a new version tag", repo, t, cur.Digest)}
		}
		return tagWrite{}, nil
	case tag.Stage:
	default:
		return tagWrite{}, nil
	}
	pol := g.policy()
	_, protected := pol.Stage(t)
	w := tagWrite{record: true}
	if had {
		w.previous = cur.Digest
	}
	if m.Kind != model.KindModel {
		if protected {
			return tagWrite{}, denied{fmt.Sprintf("stage %q of %s is protected by the trust policy: only a signed model version may enter it, and %s is an %s (%s)", t, repo, m.Digest, m.Kind, orNone(m.ArtifactType))}
		}
		if chained, err := g.chained(ctx, repo, t); err != nil || chained {
			return w, err // a stage with a history: every move is recorded
		}
		return tagWrite{}, nil // not a model, no history: plain OCI semantics
	}
	if err := g.checkNotDeleted(ctx, repo, t, m.Digest); err != nil {
		return tagWrite{}, err
	}
	if !protected {
		return w, nil
	}
	if err := g.agree(ctx); err != nil {
		return tagWrite{}, err
	}
	subject := ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size}
	d, err := g.decide(ctx, pol, repo, t, subject)
	if err != nil {
		return tagWrite{}, err
	}
	if err := d.Err(); err != nil {
		metricGateDecisions.WithLabelValues("refused").Inc()
		return tagWrite{}, denied{fmt.Sprintf("%s@%s may not enter %q: %v", repo, m.Digest, t, err)}
	}
	metricGateDecisions.WithLabelValues("allowed").Inc()
	w.decision = &d
	return w, nil
}

// checkNotDeleted refuses a stage move onto a version this registry
// deleted (a rollback to it, or its manifest pushed again straight to
// the stage): the tombstone is its last word. The same bytes pushed again
// under a new version tag are a version again, and may be promoted.
func (g *gate) checkNotDeleted(ctx context.Context, repo, stage string, d digest.Digest) error {
	tomb, err := g.idx.Tombstoned(ctx, repo, d)
	if err != nil || tomb == "" {
		return err
	}
	tags, err := g.st.tagsOf(ctx, repo, d)
	if err != nil {
		return err
	}
	for _, t := range tags {
		if tag.Classify(t) == tag.Version {
			return nil
		}
	}
	return denied{fmt.Sprintf("%s@%s was deleted from this registry (tombstone %s) and cannot enter %q: promote a version that exists (modelreg list %s), or push it again under a new version tag", repo, d, tomb, stage, repo)}
}

// decide is the policy's decision on subject entering stage of repo, from
// the subject's signatures, lineage and evaluations, and the signatures on
// the image view this server derived from it (and no other digest).
func (g *gate) decide(ctx context.Context, pol *policy.Policy, repo, stage string, subject ocispec.Descriptor) (policy.Decision, error) {
	ev, err := g.evidence(ctx, pol, repo, subject)
	if err != nil {
		return policy.Decision{}, err
	}
	return pol.Evaluate(stage, ev), nil
}

// evidence is what the policy's keys find about subject: its signatures
// (and those on the image view the server derived from it), lineage and
// evaluations.
func (g *gate) evidence(ctx context.Context, pol *policy.Policy, repo string, subject ocispec.Descriptor) (policy.Evidence, error) {
	ev, err := pol.Gather(ctx, g.repository(repo), subject)
	if err != nil {
		return ev, fmt.Errorf("reading signatures, lineage and evaluations: %w", err)
	}
	if g.views != nil {
		if view, ok := g.views.prepared(ctx, repo, subject.Digest); ok {
			vev, err := pol.Gather(ctx, g.repository(repo), view.Descriptor)
			if err != nil {
				return ev, fmt.Errorf("reading the image view's signatures: %w", err)
			}
			ev.Signatures = append(ev.Signatures, onView(vev.Signatures)...)
		}
	}
	return ev, nil
}

// onView marks signatures found on an image view, for the decision's
// reader.
func onView(found []signature.Found) []signature.Found {
	out := make([]signature.Found, len(found))
	for i, f := range found {
		f.Source = "image view: " + f.Source
		out[i] = f
	}
	return out
}

// chained reports whether a stage has a history (a signed record).
func (g *gate) chained(ctx context.Context, repo, stage string) (bool, error) {
	seq, _, err := g.idx.ChainHead(ctx, repo, stage)
	return seq > 0, err
}

// move makes a recorded stage move: an intent in the index, then the
// signed record (the commit point), then the tag, then the index. A crash
// anywhere is finished or undone by recover: after it, the newest record
// of the stage names what the tag holds. version is nil to empty the stage.
func (g *gate) move(ctx context.Context, r *http.Request, repo, stage string, version *index.Manifest, previous digest.Digest, d *policy.Decision, kind string, anchors ...string) (*promotion.Record, error) {
	if err := g.recover(ctx, repo, stage); err != nil {
		return nil, err
	}
	seq, head, err := g.idx.ChainHead(ctx, repo, stage)
	if err != nil {
		return nil, err
	}
	rec := promotion.Record{
		Repository: repo, Stage: stage, Previous: previous.String(), Actor: g.actor(r), Time: time.Now().UTC(),
		Reason: r.Header.Get(mediatypes.HeaderReason), Rollback: kind == promotion.KindRollback, Keys: []string{},
		Kind: kind, Seq: seq + 1, PreviousRecord: head, Anchors: anchors,
	}
	var subject ocispec.Descriptor
	if version != nil {
		rec.Digest = version.Digest.String()
		subject = ocispec.Descriptor{MediaType: version.MediaType, Digest: version.Digest, Size: version.Size}
		tags, err := g.st.tagsOf(ctx, repo, version.Digest)
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			if tag.Classify(t) == tag.Version {
				rec.Version = append(rec.Version, t)
			}
		}
		slices.Sort(rec.Version)
	} else {
		mt, raw, ok, err := g.st.manifest(ctx, repo, previous)
		if err != nil || !ok {
			return nil, fmt.Errorf("reading the version stage %q held: %v", stage, err)
		}
		subject = ocispec.Descriptor{MediaType: mt, Digest: previous, Size: int64(len(raw))}
	}
	if d != nil && d.Protected {
		for _, a := range d.Approvers {
			rec.Keys = append(rec.Keys, a.Fingerprint)
		}
		rec.Policy = g.policy().Digest
	}
	if rec.Reason == "" {
		rec.Reason = "tag moved by " + r.UserAgent()
	}
	switch kind {
	case promotion.KindRemoval:
		rec.Reason = "stage tag deleted by " + r.UserAgent()
	case promotion.KindAnchor:
		rec.Reason = fmt.Sprintf("genesis: adopts the %d records written before the history was chained", len(anchors))
	}
	recManifest, err := g.writeRecord(ctx, repo, subject, rec, func(recDigest digest.Digest) (int64, error) {
		return g.idx.BeginMove(ctx, index.Move{Repo: repo, Stage: stage, Target: digest.Digest(rec.Digest), MediaType: subject.MediaType, Size: subject.Size, Record: recDigest})
	})
	if err != nil {
		return nil, err
	}
	if version != nil {
		err = g.st.setTag(ctx, repo, stage, subject)
	} else {
		err = g.st.untag(ctx, repo, stage)
	}
	if err != nil {
		// The record is written: the move is committed and recovery
		// finishes it; until then the stage is stuck, so say so.
		return nil, fmt.Errorf("the move of %q is recorded (%s) but the tag could not be moved: %w; it is finished at the next move of the stage or restart", stage, recManifest.m.Digest, err)
	}
	rec.Record, rec.Trusted = recManifest.m.Digest.String(), true
	body, _ := json.Marshal(rec)
	p := index.Promotion{Stage: stage, Digest: rec.Digest, Time: rec.Time, Trusted: true, Seq: rec.Seq, PrevRecord: rec.PreviousRecord, Adopts: rec.Anchors, Body: body}
	if err := g.idx.CommitMove(ctx, recManifest.move, version, stage, recManifest.m, p); err != nil {
		g.log.Error("indexing a stage move; it is repaired at the next move of the stage or restart", "repo", repo, "stage", stage, "record", rec.Record, "err", err)
	}
	return &rec, nil
}

type writtenRecord struct {
	m    index.Manifest
	move int64
}

// writeRecord seals a promotion record, runs before (the intent) with the
// record's digest, and writes the record to storage.
func (g *gate) writeRecord(ctx context.Context, repo string, subject ocispec.Descriptor, rec promotion.Record, before func(digest.Digest) (int64, error)) (writtenRecord, error) {
	payload, err := json.Marshal(rec)
	if err != nil {
		return writtenRecord{}, err
	}
	env, err := g.key.Seal(mediatypes.ArtifactTypePromotion, payload)
	if err != nil {
		return writtenRecord{}, err
	}
	raw, layer, err := promotion.ReferrerManifest(subject, mediatypes.ArtifactTypePromotion, mediatypes.DSSEEnvelope, env, recordAnnotations(rec.Stage, rec.Time))
	if err != nil {
		return writtenRecord{}, err
	}
	m, err := index.Describe(repo, ocispec.MediaTypeImageManifest, raw)
	if err != nil {
		return writtenRecord{}, err
	}
	id, err := before(m.Digest)
	if err != nil {
		return writtenRecord{}, err
	}
	if err := g.st.putReferrer(ctx, repo, raw, layer, env); err != nil {
		g.idx.DropMove(context.WithoutCancel(ctx), id)
		return writtenRecord{}, fmt.Errorf("writing the promotion record: %w", err)
	}
	return writtenRecord{m: m, move: id}, nil
}

// recover finishes the moves a crash or a failed index write left in
// flight (of one stage, or all when stage is ""): a move whose record
// reached storage is rolled forward (the tag set to what the record
// names), any other is dropped; the repositories touched are re-read from
// storage.
func (g *gate) recover(ctx context.Context, repo, stage string) error {
	moves, err := g.idx.Moves(ctx)
	if err != nil {
		return err
	}
	for _, mv := range moves {
		if stage != "" && (mv.Repo != repo || mv.Stage != stage) {
			continue
		}
		if err := g.finish(ctx, mv, stage == ""); err != nil {
			return err
		}
	}
	return nil
}

// finish rolls one move forward (its record reached storage) or drops it
// (it did not), then brings the repository's index in line. At start-up
// (lock), another replica on the same PostgreSQL index may be making the
// move right now: finish waits for the stage's lock and acts only if the
// move is still in flight; a caller making a move holds the lock already.
func (g *gate) finish(ctx context.Context, mv index.Move, lock bool) error {
	if lock {
		unlock, err := g.idx.LockTag(ctx, mv.Repo, mv.Stage)
		if err != nil {
			return err
		}
		defer unlock()
		still, err := g.idx.HasMove(ctx, mv.ID)
		if err != nil || !still {
			return err
		}
	}
	_, _, committed, err := g.st.manifest(ctx, mv.Repo, mv.Record)
	if err != nil {
		return err
	}
	if committed {
		if mv.Target != "" {
			err = g.st.setTag(ctx, mv.Repo, mv.Stage, ocispec.Descriptor{MediaType: mv.MediaType, Digest: mv.Target, Size: mv.Size})
		} else {
			err = g.st.untag(ctx, mv.Repo, mv.Stage)
		}
		if err != nil {
			return fmt.Errorf("finishing the move of %s:%s recorded in %s: %w", mv.Repo, mv.Stage, mv.Record, err)
		}
		g.log.Warn("finished a stage move cut short", "repo", mv.Repo, "stage", mv.Stage, "record", mv.Record)
	}
	if _, err := rebuild(ctx, g.idx, g.st, g.dec, []string{mv.Repo}); err != nil {
		return err
	}
	return g.idx.DropMove(ctx, mv.ID)
}

// checkDelete decides a DELETE of ref (tag or digest). It returns the
// version tags the delete retires (a tombstone must record them first)
// and the digest deleted; a stage tag of a model is handled by the caller
// as a recorded move.
//
// A takedown (an admin's, for legal or personal-data reasons) may delete
// a version that was in a protected stage, never one a stage holds now,
// and only a model version.
func (g *gate) checkDelete(ctx context.Context, repo, ref string, takedown bool) (retire []string, d digest.Digest, err error) {
	pol := g.policy()
	byTag := false
	if pd, perr := digest.Parse(ref); perr == nil {
		d = pd
	} else {
		switch tag.Classify(ref) {
		case tag.Stage:
			if takedown {
				return nil, "", denied{fmt.Sprintf("%q is a stage: take down the version it points at, after moving the stage off it", ref)}
			}
			if _, protected := pol.Stage(ref); protected {
				return nil, "", denied{fmt.Sprintf("stage %q is protected by the trust policy and cannot be deleted; move it with `modelreg promote` or `modelreg rollback`", ref)}
			}
			return nil, "", nil
		case tag.Version:
			desc, ok, err := g.st.tag(ctx, repo, ref)
			if err != nil || !ok {
				return nil, "", err
			}
			d, byTag = desc.Digest, true
		default:
			return nil, "", nil
		}
	}
	mt, raw, ok, err := g.st.manifest(ctx, repo, d)
	if err != nil || !ok {
		return nil, "", err
	}
	c, err := model.ClassifyManifest(mt, raw)
	if err != nil {
		return nil, "", nil
	}
	if isRecord(c.ArtifactType) {
		return nil, "", denied{fmt.Sprintf("%s@%s is a modelreg record (%s); records are append-only and cannot be deleted", repo, d, c.ArtifactType)}
	}
	tags, err := g.st.tagsOf(ctx, repo, d)
	if err != nil {
		return nil, "", err
	}
	var stages, versions []string
	for _, t := range tags {
		switch tag.Classify(t) {
		case tag.Stage:
			stages = append(stages, t)
		case tag.Version:
			versions = append(versions, t)
		}
	}
	retire = versions
	if byTag {
		retire = []string{ref}
	}
	if takedown && c.Kind != model.KindModel {
		return nil, "", denied{fmt.Sprintf("%s@%s is not a model version (%s); a takedown removes a version's weights", repo, d, orNone(c.ArtifactType))}
	}
	if c.Kind != model.KindModel && len(retire) == 0 {
		return nil, "", nil // plain OCI content: plain OCI semantics
	}
	if len(stages) > 0 && (c.Kind == model.KindModel) {
		return nil, "", denied{fmt.Sprintf("%s %s is in stage %s; promote another version or roll back first", repo, ref, strings.Join(stages, ", "))}
	}
	if takedown {
		return nonNil(retire), d, nil
	}
	ever, err := g.idx.EverIn(ctx, repo, d)
	if err != nil {
		return nil, "", err
	}
	for _, s := range ever {
		if _, protected := pol.Stage(s); protected {
			return nil, "", denied{fmt.Sprintf("%s@%s was in the protected stage %q; a version that ever was in a protected stage cannot be deleted (its history must stay verifiable)", repo, d, s)}
		}
	}
	return nonNil(retire), d, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// removeStage empties an unprotected stage that has a history or holds a
// model, as a recorded move (a removal record), so the history says the
// stage is empty. It reports false for plain OCI content, which
// distribution deletes as usual.
func (g *gate) removeStage(ctx context.Context, r *http.Request, repo, stage string) (bool, error) {
	cur, ok, err := g.st.tag(ctx, repo, stage)
	if err != nil || !ok {
		return false, err
	}
	chained, err := g.chained(ctx, repo, stage)
	if err != nil {
		return false, err
	}
	if !chained {
		mt, raw, found, err := g.st.manifest(ctx, repo, cur.Digest)
		if err != nil || !found {
			return false, err
		}
		if c, err := model.ClassifyManifest(mt, raw); err != nil || c.Kind != model.KindModel {
			return false, nil
		}
	}
	_, err = g.move(ctx, r, repo, stage, nil, cur.Digest, nil, promotion.KindRemoval)
	return err == nil, err
}

// tombstone records a deletion before it happens: who, when, and the
// deleted manifest, signed by the server; the version tags it names are
// retired for good.
func (g *gate) tombstone(ctx context.Context, r *http.Request, repo string, d digest.Digest, tags []string, takedown bool) error {
	mt, raw, ok, err := g.st.manifest(ctx, repo, d)
	if err != nil || !ok {
		return fmt.Errorf("reading %s@%s: %v", repo, d, err)
	}
	t := promotion.Tombstone{Repository: repo, Digest: d.String(), MediaType: mt, Tags: tags, Actor: g.actor(r), Time: time.Now().UTC(),
		Reason: r.Header.Get(mediatypes.HeaderReason), Manifest: raw, Takedown: takedown}
	payload, err := json.Marshal(t)
	if err != nil {
		return err
	}
	env, err := g.key.Seal(mediatypes.ArtifactTypeTombstone, payload)
	if err != nil {
		return err
	}
	subject := ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
	manifest, layer, err := promotion.ReferrerManifest(subject, mediatypes.ArtifactTypeTombstone, mediatypes.DSSEEnvelope, env, recordAnnotations("", t.Time))
	if err != nil {
		return err
	}
	if err := g.st.putReferrer(ctx, repo, manifest, layer, env); err != nil {
		return fmt.Errorf("writing the tombstone: %w", err)
	}
	m, err := index.Describe(repo, ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return err
	}
	return g.idx.PutTombstone(ctx, m, index.Tombstone{Digest: d.String(), Tags: tags, Actor: t.Actor, Reason: t.Reason})
}

// anchor gives each stage whose history was written before the hash
// chain existed a signed anchor record that vouches for those older
// records, so `history --verify` passes on an upgraded registry. It runs
// once per registry (marker is written after): records a client writes
// later are never adopted.
func (g *gate) anchor(ctx context.Context, marker string) error {
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	legacy, err := g.idx.Legacy(ctx)
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(legacy)) {
		repo, stage, _ := strings.Cut(k, "\x00")
		cur, ok, err := g.st.tag(ctx, repo, stage)
		if err != nil {
			return err
		}
		if !ok {
			continue // an emptied stage: its old records stay untrusted
		}
		mt, raw, ok, err := g.st.manifest(ctx, repo, cur.Digest)
		if err != nil || !ok {
			continue
		}
		vm, err := index.Describe(repo, mt, raw)
		if err != nil || vm.Kind != model.KindModel {
			continue
		}
		r := (&http.Request{Header: http.Header{}}).WithContext(ctx)
		r.Header.Set(mediatypes.HeaderActor, "modelreg serve (upgrade)")
		if _, err := g.move(ctx, r, repo, stage, &vm, cur.Digest, nil, promotion.KindAnchor, legacy[k]...); err != nil {
			return err
		}
		g.log.Info("anchored a stage history written before the chain", "repo", repo, "stage", stage, "records", len(legacy[k]))
	}
	return os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
}

// actor names who moved a stage: the authenticated user, else what the
// client claims, else "anonymous" (with the client's address only when
// the server is configured to record it).
func (g *gate) actor(r *http.Request) string {
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
	if g.clientAddr {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return "anonymous@" + host
	}
	return "anonymous"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
