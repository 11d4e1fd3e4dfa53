package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/opencontainers/go-digest"
)

// limits enforces the limits of the configuration (docs/server.md,
// "Limits") on manifest PUTs and blob uploads, so that push rights cannot
// fill the disk (storage quotas per repository) or slow every promotion
// (referrers per subject, annotation bytes per manifest).
//
// A repository's usage is the sum of the unique blobs (configs and
// layers) that the manifests the index holds for it reference, plus those
// manifests' own bytes: what a garbage collection would keep of it. Blobs
// shared with other repositories count in each; blobs no manifest
// references do not count. The blobs of each manifest are read from
// storage once and kept in memory; each check lists the repository's
// manifests from the index, so deletions and the server's own records are
// counted as soon as the index has them.
type limits struct {
	cfg config.Limits
	idx *index.Index
	st  *store

	mu    sync.Mutex
	repos map[string]*repoUsage
}

// repoUsage is the blobs each manifest of one repository references.
type repoUsage struct {
	mu        sync.Mutex
	manifests map[digest.Digest]manifestBlobs
}

type manifestBlobs struct {
	size  int64
	blobs map[digest.Digest]int64
}

func newLimits(cfg config.Limits, idx *index.Index, st *store) *limits {
	return &limits{cfg: cfg, idx: idx, st: st, repos: map[string]*repoUsage{}}
}

// configFile is how a refusal names where a limit is raised.
const configFile = "the file given to `modelreg serve --config`"

// checkManifest decides a manifest PUT of m to repo: it answers the
// request and returns false when a limit refuses it.
func (l *limits) checkManifest(w http.ResponseWriter, ctx context.Context, repo string, m index.Manifest) bool {
	if l == nil {
		return true
	}
	var n int64
	for k, v := range m.Annotations {
		n += int64(len(k) + len(v))
	}
	// The cap is on what modelreg reads on every list, search and stage
	// move: model versions' annotations (their metadata) and referrers'.
	// Other manifests (container images) keep the distribution spec's
	// bound on the manifest itself, 4 MiB, which the OCI conformance
	// suite checks with 3.9 MB of annotations.
	capped := m.Kind == model.KindModel || m.Subject != ""
	if max := l.cfg.AnnotationBytes(); capped && n > max {
		serveError(w, errSizeInvalid, fmt.Sprintf("the manifest's annotations are %d bytes (keys and values), over the limit of %d bytes per manifest; keep large metadata in a layer or a referrer's blob, or raise limits.maxAnnotationBytes in %s", n, max, configFile))
		return false
	}
	known, err := l.idx.HasManifest(ctx, repo, m.Digest)
	if err != nil {
		serveError(w, errUnknown, "the index is unavailable")
		return false
	}
	if known {
		return true // a manifest the repository holds adds nothing
	}
	if m.Subject != "" {
		count, err := l.idx.ReferrerCount(ctx, repo, m.Subject)
		if err != nil {
			serveError(w, errUnknown, "the index is unavailable")
			return false
		}
		if max := l.cfg.Referrers(); count >= max {
			serveError(w, errDenied, fmt.Sprintf("%s@%s already has %d referrers, the limit per subject (limits.maxReferrersPerSubject, default %d); a new referrer of it is refused; delete referrers that are not records, or raise limits.maxReferrersPerSubject in %s", repo, m.Subject, count, config.DefaultMaxReferrersPerSubject, configFile))
			return false
		}
	}
	quota, rule, ok := l.cfg.Quota(repo)
	if !ok {
		return true
	}
	used, blobs, err := l.usage(ctx, repo)
	if err != nil {
		serveError(w, errUnknown, "computing the repository's storage use: "+err.Error())
		return false
	}
	adds := m.Size
	for d, size := range referencedBlobs(m.Raw) {
		if _, counted := blobs[d]; !counted {
			adds += size
		}
	}
	if used+adds > quota {
		serveError(w, errDenied, l.overQuota(repo, used, quota, rule, fmt.Sprintf("this manifest would add %s", bytesText(adds))))
		return false
	}
	return true
}

// checkUpload refuses to start or complete a blob upload to a repository
// already at or over its quota: a blob alone is not counted until a
// manifest references it, but one that can never be referenced need not
// be stored.
func (l *limits) checkUpload(w http.ResponseWriter, ctx context.Context, repo string) bool {
	if l == nil {
		return true
	}
	quota, rule, ok := l.cfg.Quota(repo)
	if !ok {
		return true
	}
	used, _, err := l.usage(ctx, repo)
	if err != nil {
		serveError(w, errUnknown, "computing the repository's storage use: "+err.Error())
		return false
	}
	if used >= quota {
		serveError(w, errDenied, l.overQuota(repo, used, quota, rule, "no blob may be uploaded to it"))
		return false
	}
	return true
}

func (l *limits) overQuota(repo string, used, quota int64, rule int, what string) string {
	q := l.cfg.Quotas[rule]
	return fmt.Sprintf("repository %s is limited to %s (limits.quotas[%d], repositories %v) and uses %s; %s; delete versions it no longer needs, or raise limits.quotas[%d].bytes in %s",
		repo, bytesText(quota), rule, q.Repositories, bytesText(used), what, rule, configFile)
}

// usage is repo's storage use and the blobs it counts.
func (l *limits) usage(ctx context.Context, repo string) (int64, map[digest.Digest]int64, error) {
	l.mu.Lock()
	u, ok := l.repos[repo]
	if !ok {
		u = &repoUsage{manifests: map[digest.Digest]manifestBlobs{}}
		l.repos[repo] = u
	}
	l.mu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	digests, err := l.idx.ManifestDigests(ctx, repo)
	if err != nil {
		return 0, nil, err
	}
	live := map[digest.Digest]bool{}
	for _, d := range digests {
		live[d] = true
		if _, ok := u.manifests[d]; ok {
			continue
		}
		_, raw, found, err := l.st.manifest(ctx, repo, d)
		if err != nil {
			return 0, nil, err
		}
		if !found {
			continue // deleted meanwhile: the index follows
		}
		u.manifests[d] = manifestBlobs{size: int64(len(raw)), blobs: referencedBlobs(raw)}
	}
	var used int64
	blobs := map[digest.Digest]int64{}
	for d, mb := range u.manifests {
		if !live[d] {
			delete(u.manifests, d)
			continue
		}
		used += mb.size
		for b, size := range mb.blobs {
			if _, dup := blobs[b]; !dup {
				blobs[b] = size
				used += size
			}
		}
	}
	return used, blobs, nil
}

// referencedBlobs are the blobs a manifest's bytes reference: its config
// and layers (OCI and Docker schema 2). An index references manifests,
// which count by themselves.
func referencedBlobs(raw []byte) map[digest.Digest]int64 {
	var m struct {
		Config *struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest digest.Digest `json:"digest"`
			Size   int64         `json:"size"`
		} `json:"layers"`
	}
	out := map[digest.Digest]int64{}
	if json.Unmarshal(raw, &m) != nil {
		return out
	}
	if m.Config != nil && m.Config.Digest != "" && m.Config.Size > 0 {
		out[m.Config.Digest] = m.Config.Size
	}
	for _, l := range m.Layers {
		if l.Digest != "" && l.Size > 0 {
			out[l.Digest] = l.Size
		}
	}
	return out
}

// LimitsStatus is what the status endpoint publishes of the limits.
type LimitsStatus struct {
	MaxReferrersPerSubject int           `json:"maxReferrersPerSubject"`
	MaxAnnotationBytes     int64         `json:"maxAnnotationBytes"`
	Quotas                 []QuotaStatus `json:"quotas"`
}

// QuotaStatus is one quota rule, in bytes.
type QuotaStatus struct {
	Repositories []string `json:"repositories"`
	Bytes        int64    `json:"bytes"`
}

func (l *limits) status() *LimitsStatus {
	if l == nil {
		return nil
	}
	s := &LimitsStatus{MaxReferrersPerSubject: l.cfg.Referrers(), MaxAnnotationBytes: l.cfg.AnnotationBytes(), Quotas: []QuotaStatus{}}
	for _, q := range l.cfg.Quotas {
		s.Quotas = append(s.Quotas, QuotaStatus{Repositories: q.Repositories, Bytes: int64(q.Bytes)})
	}
	return s
}

// bytesText writes n in bytes, with MiB for larger amounts.
func bytesText(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
}
