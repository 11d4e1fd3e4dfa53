package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// collector is the online blob garbage collector (docs/lifecycle.md).
// distribution's own mark-and-sweep runs only with the registry stopped,
// has no grace period (it would delete the blobs of a push whose manifest
// has not arrived yet) and, removing untagged manifests, deletes every
// referrer. This one runs while the registry serves:
//
//   - mark: every manifest revision of every repository (tagged or not:
//     referrers, index children, records) keeps itself, its config, its
//     layers, its children and its subject's manifest (so a deleted
//     version's manifest stays beside the tombstone that embeds it);
//   - the candidates are the other blobs, minus those written less than
//     grace ago (a push between its blobs and its manifest) and those a
//     request named recently (touch: an existence check, an upload or a
//     mount committed, a manifest written);
//   - sweep behind a write barrier: manifest writes, upload commits,
//     mounts and blob existence checks wait while the sweep deletes, and
//     whatever they named since the mark began is spared, so a push in
//     flight either finds its blobs or is told they are missing; it never
//     commits a manifest whose blobs are gone.
//
// Open uploads are not blobs yet: their bytes are under distribution's
// _uploads and the parts scratch, which the collector never reads or
// deletes.
type collector struct {
	st  *store
	log *slog.Logger
	// app is distribution's handler: a blob is unlinked from each
	// repository through it, which also clears its blob descriptor cache
	// (else a HEAD could still answer 200 for a deleted blob).
	app   http.Handler
	grace time.Duration

	// barrier is held shared by every write that may name a blob
	// (enter) and exclusively by the sweep.
	barrier sync.RWMutex
	// running admits one collection at a time.
	running sync.Mutex

	mu      sync.Mutex
	touched map[digest.Digest]time.Time
	pruneAt int
}

func newCollector(st *store, grace time.Duration, log *slog.Logger) *collector {
	return &collector{st: st, grace: grace, log: log, touched: map[digest.Digest]time.Time{}, pruneAt: 4096}
}

// enter is the write barrier: a write that may name blobs holds it until
// it is done (and has touched what it named); it waits while a sweep runs.
func (c *collector) enter() func() {
	c.barrier.RLock()
	return c.barrier.RUnlock
}

// touch records that a request named blobs just now: they are kept by the
// next sweep, however old and unreferenced. Entries older than the grace
// period are pruned as the map grows, so it holds about one grace period
// of distinct digests.
func (c *collector) touch(ds ...digest.Digest) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		if d != "" {
			c.touched[d] = now
		}
	}
	if len(c.touched) >= c.pruneAt {
		for d, t := range c.touched {
			if now.Sub(t) > c.grace {
				delete(c.touched, d)
			}
		}
		c.pruneAt = max(4096, 2*len(c.touched))
	}
}

// touchedSince lists the digests named after t.
func (c *collector) touchedSince(t time.Time) map[digest.Digest]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[digest.Digest]bool{}
	for d, at := range c.touched {
		if at.After(t) {
			out[d] = true
		}
	}
	return out
}

// refs are the digests a manifest names: config, layers, children
// (an index's manifests) and subject.
func refs(raw []byte) []digest.Digest {
	var m struct {
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Blobs     []ocispec.Descriptor `json:"blobs"`
		Manifests []ocispec.Descriptor `json:"manifests"`
		Subject   *ocispec.Descriptor  `json:"subject"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	var out []digest.Digest
	if m.Config != nil {
		out = append(out, m.Config.Digest)
	}
	for _, l := range [][]ocispec.Descriptor{m.Layers, m.Blobs, m.Manifests} {
		for _, d := range l {
			out = append(out, d.Digest)
		}
	}
	if m.Subject != nil {
		out = append(out, m.Subject.Digest)
	}
	return out
}

// subjectOnly keeps only a manifest's subject among its references.
func subjectOnly(raw []byte) []digest.Digest {
	if s, ok := subjectOf(raw); ok {
		return []digest.Digest{s.Digest}
	}
	return nil
}

// marked is what the mark phase found: the blobs to keep, and the
// repositories linking each blob (to unlink it through distribution).
type marked struct {
	keep  map[digest.Digest]bool
	links map[digest.Digest][]string
	// manifests counts the manifest revisions read.
	manifests int
}

// mark walks every repository. Manifests in without (repo@digest) keep
// themselves (their blob) but not what they name: a dry run of retention
// marks as if those versions were deleted already.
func (c *collector) mark(ctx context.Context, without map[string]bool) (marked, error) {
	mk := marked{keep: map[digest.Digest]bool{}, links: map[digest.Digest][]string{}}
	names, err := c.repos(ctx)
	if err != nil {
		return mk, fmt.Errorf("listing repositories: %w", err)
	}
	for _, name := range names {
		repo, err := c.st.repo(ctx, name)
		if err != nil {
			return mk, err
		}
		ms, err := repo.Manifests(ctx)
		if err != nil {
			return mk, err
		}
		en, ok := ms.(distribution.ManifestEnumerator)
		if !ok {
			return mk, errors.New("storage cannot list manifests")
		}
		err = en.Enumerate(ctx, func(d digest.Digest) error {
			mk.keep[d] = true
			mk.manifests++
			m, err := ms.Get(ctx, d)
			if err != nil {
				return nil // a revision without its blob: nothing to follow
			}
			_, payload, err := m.Payload()
			if err != nil {
				return err
			}
			named := refs(payload)
			if without[name+"@"+d.String()] {
				named = subjectOnly(payload)
			}
			for _, r := range named {
				mk.keep[r] = true
			}
			return nil
		})
		if err != nil && !isPathNotFound(err) {
			return mk, fmt.Errorf("listing the manifests of %s: %w", name, err)
		}
		tags, err := repo.Tags(ctx).All(ctx)
		if err != nil && !isPathNotFound(err) && !errors.As(err, new(distribution.ErrRepositoryUnknown)) {
			return mk, fmt.Errorf("listing the tags of %s: %w", name, err)
		}
		for _, t := range tags {
			if desc, err := repo.Tags(ctx).Get(ctx, t); err == nil {
				mk.keep[desc.Digest] = true
			}
		}
		if be, ok := repo.Blobs(ctx).(distribution.BlobEnumerator); ok {
			err := be.Enumerate(ctx, func(d digest.Digest) error {
				mk.links[d] = append(mk.links[d], name)
				return nil
			})
			if err != nil && !isPathNotFound(err) {
				return mk, fmt.Errorf("listing the blobs of %s: %w", name, err)
			}
		}
	}
	return mk, nil
}

// repos lists every repository directory holding manifests or blob
// links. distribution's catalog lists only those with manifests, but a
// repository that took uploads and never a manifest links blobs too, and
// a link left to a deleted blob would let distribution's cache answer
// that the blob exists.
func (c *collector) repos(ctx context.Context) ([]string, error) {
	const root = "/docker/registry/v2/repositories"
	seen := map[string]bool{}
	var out []string
	err := c.st.driver.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		p := fi.Path()
		dir, file := path.Split(p)
		if !strings.HasPrefix(file, "_") {
			return nil
		}
		if file == "_manifests" || file == "_layers" {
			if name := strings.TrimSuffix(strings.TrimPrefix(dir, root+"/"), "/"); !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
		return storagedriver.ErrSkipDir
	})
	if isPathNotFound(err) {
		return nil, nil
	}
	return out, err
}

// blob is a collection candidate.
type blob struct {
	digest  digest.Digest
	size    int64
	written time.Time
}

// candidates lists the blobs in storage that mk does not keep.
func (c *collector) candidates(ctx context.Context, mk marked) ([]blob, error) {
	var out []blob
	err := c.st.ns.Blobs().Enumerate(ctx, func(d digest.Digest) error {
		if mk.keep[d] {
			return nil
		}
		fi, err := c.st.driver.Stat(ctx, blobDataPath(d))
		if err != nil {
			return nil // gone meanwhile, or a blob directory without data
		}
		out = append(out, blob{digest: d, size: fi.Size(), written: fi.ModTime()})
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return nil, fmt.Errorf("listing blobs: %w", err)
	}
	return out, nil
}

// blobDataPath is where distribution's storage keeps a blob's bytes.
func blobDataPath(d digest.Digest) string {
	return "/docker/registry/v2/blobs/" + d.Algorithm().String() + "/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data"
}

// sweepResult counts what a sweep deleted (or, in a dry run, would).
type sweepResult struct {
	Blobs int
	Bytes int64
	// Young are unreferenced blobs spared: written or named by a request
	// less than the grace period ago.
	Young      int
	YoungBytes int64
	// Spared are unreferenced blobs a request named while the collection
	// ran (a takedown reports them: a push referenced them meanwhile).
	Spared    []digest.Digest
	Manifests int
}

// errCollecting is the answer while another collection runs.
var errCollecting = errors.New("a collection is already running; try again when it is done (one collection at a time)")

// collect marks and sweeps the whole registry. In a dry run it deletes
// nothing and counts what would go, marking as if the manifests in
// without were deleted already.
func (c *collector) collect(ctx context.Context, without map[string]bool, dryRun bool) (sweepResult, error) {
	if !c.running.TryLock() {
		return sweepResult{}, errCollecting
	}
	defer c.running.Unlock()
	start := time.Now()
	mk, err := c.mark(ctx, without)
	if err != nil {
		return sweepResult{}, err
	}
	cands, err := c.candidates(ctx, mk)
	if err != nil {
		return sweepResult{}, err
	}
	res := sweepResult{Manifests: mk.manifests}
	if !dryRun {
		c.barrier.Lock()
		defer c.barrier.Unlock()
	}
	now := time.Now()
	young := now.Add(-c.grace)
	// Named since the mark began, or within the grace period.
	since := young
	if start.Before(since) {
		since = start
	}
	named := c.touchedSince(since)
	var gone []blob
	for _, b := range cands {
		if b.written.After(young) || named[b.digest] {
			res.Young++
			res.YoungBytes += b.size
			continue
		}
		gone = append(gone, b)
	}
	for _, b := range gone {
		if !dryRun {
			if err := c.remove(ctx, b.digest, mk.links[b.digest]); err != nil {
				return res, err
			}
		}
		res.Blobs++
		res.Bytes += b.size
	}
	if !dryRun {
		c.unlinkAgain(ctx, gone, mk)
	}
	return res, nil
}

// takedown deletes the blobs a deleted manifest named (its weights),
// now, whatever their age, except those another manifest still names or
// a request named while this ran: those are reported as spared.
func (c *collector) takedown(ctx context.Context, raw []byte) (sweepResult, error) {
	c.running.Lock() // waits for a collection in progress: a takedown is not dropped
	defer c.running.Unlock()
	start := time.Now()
	mk, err := c.mark(ctx, nil)
	if err != nil {
		return sweepResult{}, err
	}
	c.barrier.Lock()
	defer c.barrier.Unlock()
	named := c.touchedSince(start)
	res := sweepResult{Manifests: mk.manifests}
	var gone []blob
	seen := map[digest.Digest]bool{}
	for _, d := range refs(raw) {
		if s, ok := subjectOf(raw); (ok && s.Digest == d) || seen[d] {
			continue
		}
		seen[d] = true
		if mk.keep[d] || named[d] {
			res.Spared = append(res.Spared, d)
			continue
		}
		fi, err := c.st.driver.Stat(ctx, blobDataPath(d))
		if err != nil {
			continue // not stored (or gone already)
		}
		if err := c.remove(ctx, d, mk.links[d]); err != nil {
			return res, err
		}
		gone = append(gone, blob{digest: d, size: fi.Size()})
		res.Blobs++
		res.Bytes += fi.Size()
	}
	c.unlinkAgain(ctx, gone, mk)
	return res, nil
}

// remove unlinks a blob from every repository through distribution
// (which clears its descriptor cache), then deletes its bytes with
// distribution's vacuum.
func (c *collector) remove(ctx context.Context, d digest.Digest, repos []string) error {
	c.unlink(ctx, d, repos)
	if err := storage.NewVacuum(ctx, c.st.driver).RemoveBlob(d.String()); err != nil && !isPathNotFound(err) {
		return fmt.Errorf("deleting blob %s: %w", d, err)
	}
	return nil
}

// unlink deletes a blob's link in each repository through distribution.
func (c *collector) unlink(ctx context.Context, d digest.Digest, repos []string) {
	for _, name := range repos {
		r, err := http.NewRequestWithContext(ctx, http.MethodDelete, "/v2/"+name+"/blobs/"+d.String(), nil)
		if err != nil {
			continue
		}
		r.Host = internalHost
		r.RequestURI = r.URL.RequestURI()
		rec := newCapture()
		c.app.ServeHTTP(rec, r)
		if code := rec.code(); code != http.StatusAccepted && code != http.StatusNotFound {
			c.log.Warn("unlinking a collected blob", "repo", name, "digest", d, "status", code, "body", rec.body.String())
		}
	}
}

// unlinkAgain clears once more the descriptor cache of every repository
// that linked a deleted blob: a GET that read a link just before it was
// removed may have cached the blob as present after the first clear.
// Distribution's delete clears the cache even when the link is gone.
func (c *collector) unlinkAgain(ctx context.Context, gone []blob, mk marked) {
	for _, b := range gone {
		c.unlink(ctx, b.digest, mk.links[b.digest])
	}
}
