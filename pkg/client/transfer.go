package client

import (
	"context"
	"fmt"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/lineage"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/remote"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
)

// PushOptions are the choices of one push.
type PushOptions struct {
	// Metadata goes into the manifest's annotations (part of the digest).
	Metadata model.Metadata
	// CreatedIsDefault says Metadata.Created is "now", not a time the
	// caller chose: re-pushing identical files and metadata to an existing
	// version is then a no-op (see transfer.PushOptions).
	CreatedIsDefault bool
	// Rules override file kinds (model.ParseRules).
	Rules []model.Rule
	// Lineage, when set, is recorded as a referrer of the new version.
	Lineage *LineageOptions
	// BaseModel (REGISTRY/REPO:TAG) is mounted from when it is on the same
	// registry: files the size of its layers are hashed first and mounted
	// when equal.
	BaseModel string
	// Concurrency is how many files are hashed and uploaded at once; 0
	// picks the default.
	Concurrency int
	// ChunkSize is the bytes per upload request; 0 is 256 MiB.
	ChunkSize int64
	// NoCache hashes every file instead of trusting the digest cache.
	NoCache bool
	// Dedupe decides how files the digest cache does not know are sent:
	// hashed first (never sending what the registry has) or streamed in
	// one read; "" is DedupeAuto.
	Dedupe Dedupe
	// Connections is how many connections one file of 64 MiB or more is
	// sent over, as parts, to a registry serving uploads in parts (modelreg
	// serve); 1 never sends parts; 0 decides by the link (docs/transfer.md).
	Connections int
	// NoIgnore pushes every file of the directories given; by default
	// model.DefaultIgnore and each directory's .modelregignore leave files
	// out (reported in PushResult.Ignored).
	NoIgnore bool
	// Image also writes the version's image view (tar layers under
	// /models) so container runtimes can pull it: the files are read twice
	// more and sent again as tars.
	Image bool
}

// Push uploads files and directories as the model version ref and, when
// asked, records their lineage. Blobs the registry has are not sent again;
// the tag is written last.
func (c *Client) Push(ctx context.Context, ref string, paths []string, o PushOptions) (*transfer.PushResult, error) {
	r, repo, err := c.Repository(ref)
	if err != nil {
		return nil, err
	}
	files, ignored, err := collect(paths, o)
	if err != nil {
		return nil, err
	}
	var pred lineage.Predicate
	if o.Lineage != nil {
		// A bad lineage option fails before anything is uploaded.
		if pred, err = c.predicate(ctx, o.Lineage); err != nil {
			return nil, err
		}
	}
	opts := transfer.PushOptions{Metadata: o.Metadata, CreatedIsDefault: o.CreatedIsDefault, Concurrency: o.Concurrency, Progress: c.opts.Progress}
	hc, err := c.opts.Remote.Client(r.Registry)
	if err != nil {
		return nil, err
	}
	chunk := o.ChunkSize
	if chunk == 0 {
		chunk = 256 << 20
	}
	opts.Streamer = &transfer.Streamer{Client: hc, Base: c.opts.Remote.Scheme(r.Registry) + "://" + r.Registry + "/v2/" + r.Repository,
		StateDir: c.cachePath("uploads"), Chunk: chunk}
	if !o.NoCache && c.opts.CacheDir != "" {
		opts.Cache = transfer.OpenDigestCache(c.cachePath("digests.json"))
	}
	if opts.HashFirst, err = c.hashFirst(r.Registry, o.Dedupe); err != nil {
		return nil, err
	}
	if o.Connections < 0 {
		return nil, usage(fmt.Errorf("connections %d: expected 1 or more (0: decided by the link)", o.Connections))
	}
	if n := c.partConnections(r.Registry, o.Connections); n > 1 && anyLarge(files) && transfer.SupportsParts(ctx, hc, c.opts.Remote.Scheme(r.Registry)+"://"+r.Registry) {
		opts.Parts = &transfer.PartUploader{Client: hc, Registry: c.opts.Remote.Scheme(r.Registry) + "://" + r.Registry, Repository: r.Repository,
			StateDir: c.cachePath("uploads"), Connections: n, Threshold: transfer.DefaultPartThreshold}
	}
	c.baseLayers(ctx, r, o.BaseModel, &opts)
	start := time.Now()
	res, err := transfer.Push(ctx, repo, r, files, opts)
	if err != nil {
		return nil, err
	}
	conn := opts.Streamer.FastestConnection()
	if opts.Parts != nil {
		conn = max(conn, opts.Parts.FastestConnection())
	}
	res.Ignored = ignored
	c.rememberLink(r.Registry, res.Uploaded, time.Since(start), conn)
	if o.Image {
		iv, err := c.pushImageFrom(ctx, r, repo, files)
		if err != nil {
			return res, fmt.Errorf("%s was pushed, but %w; write it with `modelreg image --write %s`", res.Digest, err, ref)
		}
		res.Image, res.ImageSent = iv.Reference, iv.Sent
	}
	if o.Lineage != nil && !res.Unchanged {
		if _, err := c.writeLineage(ctx, r, repo, digest.Digest(res.Digest), pred, o.Lineage); err != nil {
			return res, fmt.Errorf("%s was pushed, but %w; add it with `modelreg lineage add`", res.Digest, err)
		}
	}
	return res, nil
}

// collect gathers the files of a push, leaving out what the ignore rules
// match unless o.NoIgnore.
func collect(paths []string, o PushOptions) ([]model.File, []string, error) {
	if o.NoIgnore {
		files, err := model.Collect(paths, o.Rules)
		return files, nil, err
	}
	return model.CollectIgnoring(paths, o.Rules)
}

// anyLarge says whether a push has a file large enough to send in parts,
// before asking the registry whether it takes them.
func anyLarge(files []model.File) bool {
	for _, f := range files {
		if f.Size >= transfer.DefaultPartThreshold {
			return true
		}
	}
	return false
}

// baseLayers lets a push mount from its base model when both are on one
// registry; any failure only means no mount.
func (c *Client) baseLayers(ctx context.Context, r registry.Reference, base string, opts *transfer.PushOptions) {
	b, err := remote.ParseReference(base)
	if base == "" || err != nil || b.Registry != r.Registry {
		return
	}
	brepo, err := c.opts.Remote.Repository(b)
	if err != nil {
		return
	}
	bv, err := transfer.Fetch(ctx, brepo, b)
	if err != nil {
		return
	}
	opts.MountFrom = append(opts.MountFrom, b.Registry+"/"+b.Repository)
	for _, f := range bv.Files {
		opts.BaseLayers = append(opts.BaseLayers, f.Descriptor)
	}
}

// PushTo stores files as version tag of target: any oras Target, such as
// an OCI layout directory (oras.land/oras-go/v2/content/oci), for a model
// built where no registry is reachable. No cache or resumable upload is
// used; lineage is not recorded (it needs a referrer-capable registry).
func (c *Client) PushTo(ctx context.Context, target oras.Target, tag string, paths []string, o PushOptions) (*transfer.PushResult, error) {
	files, ignored, err := collect(paths, o)
	if err != nil {
		return nil, err
	}
	opts := transfer.PushOptions{Metadata: o.Metadata, Concurrency: o.Concurrency, Progress: c.opts.Progress}
	res, err := transfer.Push(ctx, target, registry.Reference{Registry: "oci-layout", Repository: "model", Reference: tag}, files, opts)
	if res != nil {
		res.Ignored = ignored
	}
	return res, err
}

// PullFrom downloads the version ref (a tag or digest) of target, any
// oras ReadOnlyTarget (an OCI layout directory), into dir, verified.
func (c *Client) PullFrom(ctx context.Context, target oras.ReadOnlyTarget, ref, dir string, o transfer.PullOptions) (*transfer.PullResult, error) {
	if o.Progress == nil {
		o.Progress = c.opts.Progress
	}
	return transfer.Pull(ctx, target, registry.Reference{Registry: "oci-layout", Repository: "model", Reference: ref}, dir, o)
}

// Pull downloads the version ref into dir (which must not exist or be
// empty), every blob verified; a failure leaves nothing at dir.
func (c *Client) Pull(ctx context.Context, ref, dir string, o transfer.PullOptions) (*transfer.PullResult, error) {
	r, repo, err := c.versionRepository(ref)
	if err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = c.opts.Progress
	}
	return transfer.Pull(ctx, repo, r, dir, o)
}

// Inspect reads the version ref: files, metadata, format, the tags on it
// and its evaluations.
func (c *Client) Inspect(ctx context.Context, ref string) (*catalog.Inspection, error) {
	r, repo, err := c.versionRepository(ref)
	if err != nil {
		return nil, err
	}
	in, err := catalog.Inspect(ctx, repo, r)
	if err != nil {
		return nil, err
	}
	// The image view, when there is one: served by modelreg serve, or
	// written by a client among the referrers. Its absence is no error.
	if iv, err := c.imageOf(ctx, r, repo, in.Version); err == nil {
		in.Image = iv.Reference
	}
	if api, err := c.Server(ctx, r.Registry); err == nil {
		if mc, err := api.Modelcar(ctx, r.Repository, in.Version.Descriptor.Digest.String()); err == nil {
			in.Modelcar = fmt.Sprintf("%s/%s@%s", r.Registry, mc.Repository, mc.Digest)
			in.ModelcarBase = r.Registry + "/" + mc.Base
		}
	}
	if in.Weights, err = c.weightsOf(ctx, r, in.Version); err != nil {
		return nil, err
	}
	return in, nil
}

// List lists a model repository's versions, newest first, with their
// stages: from the model API on modelreg serve, else through tags.
func (c *Client) List(ctx context.Context, repository string) (*catalog.Listing, error) {
	r, repo, err := c.Repository(repository)
	if err != nil {
		return nil, err
	}
	if r.Reference != "" {
		return nil, usage(fmt.Errorf("list takes a repository without tag or digest, e.g. %s/%s", r.Registry, r.Repository))
	}
	if api, err := c.Server(ctx, r.Registry); err == nil {
		rows, err := api.Versions(ctx, r.Repository)
		if err != nil {
			return nil, err
		}
		return listingOf(r.Registry+"/"+r.Repository, rows), nil
	}
	return catalog.List(ctx, repo, r)
}

// listingOf turns the model API's rows into a listing: one row per
// version tag, newest first, as catalog.List gives.
func listingOf(repo string, rows []wire.VersionRow) *catalog.Listing {
	l := &catalog.Listing{Repository: repo, Versions: []catalog.VersionSummary{}, Stages: map[string]string{}}
	for _, r := range rows {
		created, _ := parseTime(r.Created)
		for _, s := range r.Stages {
			l.Stages[s] = r.Digest
		}
		for _, v := range r.Versions {
			l.Versions = append(l.Versions, catalog.VersionSummary{Tag: v, Digest: r.Digest, Created: created, Size: r.Size, Files: r.Files, Stages: r.Stages})
		}
	}
	return l
}

// Search runs a query (docs/api.md) on host, which must be modelreg serve.
func (c *Client) Search(ctx context.Context, host, query, orderBy string, limit, offset int) ([]wire.VersionRow, error) {
	api, err := c.Server(ctx, host)
	if err != nil {
		return nil, err
	}
	return api.Search(ctx, query, orderBy, limit, offset)
}
