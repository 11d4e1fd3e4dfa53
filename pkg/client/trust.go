package client

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/modelreg/modelreg/mediatypes"
	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/model"
	"github.com/modelreg/modelreg/pkg/policy"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/modelreg/modelreg/pkg/signature"
	"github.com/modelreg/modelreg/pkg/tag"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// Signed is what Sign stored.
type Signed struct {
	Digest    string         `json:"digest"`
	Key       string         `json:"key"`
	Format    signature.Form `json:"format"`
	Signature string         `json:"signature"`
	// Image is the version's image view, signed too when there is one, so
	// a deploy pipeline can `cosign verify` what it deploys;
	// ImageSignature is that signature.
	Image          string `json:"image,omitempty"`
	ImageSignature string `json:"imageSignature,omitempty"`
}

// Sign signs the manifest digest of the version ref with priv and stores
// the signature in the registry, in form (a sigstore bundle by default);
// and its image view's digest the same way, when there is one.
func (c *Client) Sign(ctx context.Context, ref string, priv key.Private, form signature.Form) (*Signed, error) {
	return c.sign(ctx, ref, priv, form, true)
}

// SignVersionOnly is Sign without the image view: for a signer who
// approves the files but not what is deployed of them.
func (c *Client) SignVersionOnly(ctx context.Context, ref string, priv key.Private, form signature.Form) (*Signed, error) {
	return c.sign(ctx, ref, priv, form, false)
}

func (c *Client) sign(ctx context.Context, ref string, priv key.Private, form signature.Form, image bool) (*Signed, error) {
	if form == "" {
		form = signature.FormBundle
	}
	if form != signature.FormBundle && form != signature.FormLegacy {
		return nil, usage(fmt.Errorf("signature format %q: expected bundle or legacy", form))
	}
	r, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	desc, err := signature.Sign(ctx, repo, r, v.Descriptor, priv, signature.SignOptions{Form: form})
	if err != nil {
		return nil, fmt.Errorf("storing the signature: %w", err)
	}
	out := &Signed{Digest: v.Descriptor.Digest.String(), Key: priv.Fingerprint, Format: form, Signature: desc.Digest.String()}
	// The image view too, when the registry serves or holds one: its
	// signature is stored beside the model's (modelreg serve shows it
	// through the view's repository).
	if !image {
		return out, nil
	}
	// Only a view digest this client computed from verified bytes, or that
	// modelreg serve derived, is signed: on another registry the view a
	// client wrote is recomputed from the version's blobs first (one read
	// of each), so a forged view is never signed.
	iv, err := c.imageOf(ctx, r, repo, v)
	if err == nil {
		if _, serr := c.Server(ctx, r.Registry); serr != nil {
			if iv, err = c.CheckImage(ctx, ref); err != nil {
				return out, fmt.Errorf("the version is signed, but not its image view: %w", err)
			}
		}
	}
	if err == nil {
		vd, err := repo.Resolve(ctx, iv.Digest)
		if err != nil {
			vr, vrepo, rerr := c.Repository(iv.Reference)
			if rerr != nil {
				return out, fmt.Errorf("the version is signed, but its image view %s: %w", iv.Reference, rerr)
			}
			if vd, err = vrepo.Resolve(ctx, vr.Reference); err != nil {
				return out, fmt.Errorf("the version is signed, but its image view %s could not be read: %w", iv.Reference, err)
			}
		}
		sd, err := signature.Sign(ctx, repo, r, vd, priv, signature.SignOptions{Form: form})
		if err != nil {
			return out, fmt.Errorf("the version is signed, but signing its image view %s: %w", iv.Reference, err)
		}
		out.Image, out.ImageSignature = iv.Reference, sd.Digest.String()
	}
	return out, nil
}

// Verdict is what Verify found: every signature and the policy's decision
// for each stage asked.
type Verdict struct {
	Digest        string            `json:"digest"`
	Signatures    []signature.Found `json:"signatures"`
	Lineage       any               `json:"lineage"`
	Evaluations   any               `json:"evaluations"`
	Decisions     []policy.Decision `json:"decisions"`
	SignatureNote string            `json:"signatureNote,omitempty"`
	// Revoked lists the policy keys revoked now whose signatures of the
	// version were found (they count for nothing); StageHeads the stages
	// holding the version, each checked for resting on a revoked key.
	Revoked    []policy.RevokedKey `json:"revoked"`
	StageHeads []policy.Head       `json:"stageHeads"`
	OK         bool                `json:"ok"`
	Descriptor ocispec.Descriptor  `json:"-"`
	Repository string              `json:"-"`
	Evidence   policy.Evidence     `json:"-"`
	Policy     *policy.Policy      `json:"-"`
	// At is when the policy was evaluated.
	At time.Time `json:"-"`
}

// Verify finds the version's signatures (in the three cosign forms) and
// evaluates the policy for stage, or for every stage it names when stage
// is "". OK is true when that stage's rule holds, or (no stage) when at
// least one signature by a policy key is valid.
func (c *Client) Verify(ctx context.Context, ref string, pol *policy.Policy, stage string) (*Verdict, error) {
	vd, err := c.verify(ctx, ref, pol, stage)
	if err != nil {
		return nil, err
	}
	if err := c.checkHeadsOf(ctx, ref, vd); err != nil {
		return nil, fmt.Errorf("checking the stages that hold %s: %w", ref, err)
	}
	return vd, nil
}

// verify is Verify without the stage heads.
func (c *Client) verify(ctx context.Context, ref string, pol *policy.Policy, stage string) (*Verdict, error) {
	if pol == nil {
		return nil, usage(fmt.Errorf("no trust policy: a policy names the keys to check (see docs/policy.md)"))
	}
	r, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	ev, err := pol.Gather(ctx, repo, v.Descriptor)
	if err != nil {
		return nil, err
	}
	// On modelreg serve, signatures on the image view it derives from the
	// version approve the version too, as its gate counts them.
	if found, err := c.viewSignatures(ctx, r, repo, v, pol); err == nil {
		ev.Signatures = append(ev.Signatures, found...)
	}
	vd := &Verdict{Digest: v.Descriptor.Digest.String(), Signatures: ev.Signatures, Lineage: ev.Lineage, Evaluations: ev.Evaluations,
		SignatureNote: ev.SignatureNote, Descriptor: v.Descriptor, Repository: r.Repository, Evidence: ev, Policy: pol}
	if vd.Signatures == nil {
		vd.Signatures = []signature.Found{}
	}
	stages := []string{stage}
	if stage == "" {
		stages = slices.Sorted(maps.Keys(pol.Stages))
	}
	vd.At = time.Now()
	for _, s := range stages {
		vd.Decisions = append(vd.Decisions, pol.EvaluateAt(s, ev, vd.At))
	}
	vd.Revoked = revokedSigners(pol, vd.Signatures, vd.At)
	if stage != "" {
		vd.OK = vd.Decisions[0].Allowed
	} else {
		for _, f := range vd.Signatures {
			vd.OK = vd.OK || f.Valid
		}
	}
	return vd, nil
}

// viewSignatures gathers the signatures of the image view modelreg serve
// derives from v (none from another registry: there the view is whatever
// a client wrote, which the server did not derive).
func (c *Client) viewSignatures(ctx context.Context, r registry.Reference, repo registry.Repository, v *model.Version, pol *policy.Policy) ([]signature.Found, error) {
	api, err := c.Server(ctx, r.Registry)
	if err != nil {
		return nil, err
	}
	iv, err := api.Image(ctx, r.Repository, v.Descriptor.Digest.String())
	if err != nil {
		return nil, err
	}
	_, vrepo, err := c.Repository(r.Registry + "/" + iv.Repository + "@" + iv.Digest)
	if err != nil {
		return nil, err
	}
	desc, err := vrepo.Resolve(ctx, iv.Digest)
	if err != nil {
		return nil, err
	}
	ev, err := pol.Gather(ctx, repo, desc)
	if err != nil {
		return nil, err
	}
	out := make([]signature.Found, len(ev.Signatures))
	for i, f := range ev.Signatures {
		f.Source = "image view: " + f.Source
		out[i] = f
	}
	return out, nil
}

// MoveOptions are the choices of a promotion or rollback.
type MoveOptions struct {
	// Policy decides on the client; nil leaves every stage unprotected
	// here (modelreg serve applies its own policy whatever the client).
	Policy *policy.Policy
	// Reason goes into the record; Actor too ("" is the Client's actor).
	Reason, Actor string
}

// Promote moves stage to the version ref after checking the policy, and
// returns the record of the move. On modelreg serve the server checks its
// own policy and writes the record; elsewhere the client writes it.
func (c *Client) Promote(ctx context.Context, ref, stage string, o MoveOptions) (*promotion.Result, error) {
	r, repo, v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	opts, err := c.moveOptions(ctx, r, o, false)
	if err != nil {
		return nil, err
	}
	return promotion.Promote(ctx, repo, r, v.Descriptor, stage, opts)
}

// Rollback moves stage back to the version it held before the current
// one, as the history tells (the server's signed history on modelreg
// serve), checking the policy for it.
func (c *Client) Rollback(ctx context.Context, repository, stage string, o MoveOptions) (*promotion.Result, error) {
	r, repo, err := c.Repository(repository)
	if err != nil {
		return nil, err
	}
	opts, err := c.moveOptions(ctx, r, o, true)
	if err != nil {
		return nil, err
	}
	return promotion.Rollback(ctx, repo, r, stage, opts)
}

// moveOptions builds the promotion options; against modelreg serve the tag
// move carries the reason and actor as headers for the server's record,
// and a rollback reads the server's signed history.
func (c *Client) moveOptions(ctx context.Context, r registry.Reference, o MoveOptions, rollback bool) (promotion.Options, error) {
	actor := o.Actor
	if actor == "" {
		actor = c.opts.Actor
	}
	opts := promotion.Options{Policy: o.Policy, Actor: actor, Reason: o.Reason}
	api, err := c.Server(ctx, r.Registry)
	if err != nil {
		return opts, nil // a plain registry: the client records
	}
	opts.ServerRecords = true
	ro := c.opts.Remote
	ro.Header = http.Header{}
	ro.Header.Set(mediatypes.HeaderActor, actor)
	if o.Reason != "" {
		ro.Header.Set(mediatypes.HeaderReason, o.Reason)
	}
	if rollback {
		ro.Header.Set(mediatypes.HeaderRollback, "true")
	}
	tagger, err := ro.Repository(r)
	if err != nil {
		return opts, err
	}
	opts.Tagger = tagger
	opts.History = func(ctx context.Context, stage string) ([]promotion.Record, error) {
		return api.History(ctx, r.Repository, stage)
	}
	if o.Policy != nil {
		opts.MoreSignatures = func(ctx context.Context, target ocispec.Descriptor) ([]signature.Found, error) {
			_, repo, err := c.Repository(r.Registry + "/" + r.Repository)
			if err != nil {
				return nil, err
			}
			return c.viewSignatures(ctx, r, repo, &model.Version{Descriptor: target}, o.Policy)
		}
	}
	return opts, nil
}

// stageRepository checks a stage name and a repository reference given
// without tag or digest, and connects to the repository.
func (c *Client) stageRepository(repository, stage string) (registry.Reference, *remote.Repository, error) {
	if err := tag.ValidateStage(stage); err != nil {
		return registry.Reference{}, nil, usage(err)
	}
	r, repo, err := c.Repository(repository)
	if err != nil {
		return registry.Reference{}, nil, err
	}
	if r.Reference != "" {
		return registry.Reference{}, nil, usage(fmt.Errorf("give the repository without tag or digest, e.g. %s/%s", r.Registry, r.Repository))
	}
	return r, repo, nil
}

// History returns a stage's records, newest first: on modelreg serve the
// server's signed history, elsewhere every record found in the registry.
func (c *Client) History(ctx context.Context, repository, stage string) ([]promotion.Record, error) {
	r, repo, err := c.stageRepository(repository, stage)
	if err != nil {
		return nil, err
	}
	var records []promotion.Record
	if api, aerr := c.Server(ctx, r.Registry); aerr == nil {
		records, err = api.History(ctx, r.Repository, stage)
	} else {
		records, err = promotion.History(ctx, repo, r, stage)
	}
	if records == nil && err == nil {
		records = []promotion.Record{}
	}
	return records, err
}

// CopiedHistory returns the histories of a stage at other registries, as
// copied into this one (modelreg copy carries promotion records along):
// one per origin, newest first, never part of History. On modelreg serve
// the server examines them against its own policy's registries: keys; on
// another registry this client does, against pol's (nil trusts none).
func (c *Client) CopiedHistory(ctx context.Context, repository, stage string, pol *policy.Policy) ([]promotion.Copied, error) {
	r, repo, err := c.stageRepository(repository, stage)
	if err != nil {
		return nil, err
	}
	var copied []promotion.Copied
	if api, aerr := c.Server(ctx, r.Registry); aerr == nil {
		copied, err = api.Copied(ctx, r.Repository, stage)
	} else {
		keys := map[string]ed25519.PublicKey{}
		for name, k := range pol.RegistryKeys() {
			keys[name] = k.Key
		}
		_, copied, err = promotion.Gather(ctx, repo, r, stage, keys)
	}
	if copied == nil && err == nil {
		copied = []promotion.Copied{}
	}
	return copied, err
}

// VerifyHistory checks a stage's signed hash chain on modelreg serve
// against storage (promotion.VerifyChain). pub pins the server's key; nil
// trusts the key the server publishes.
func (c *Client) VerifyHistory(ctx context.Context, repository, stage string, pub ed25519.PublicKey) (*promotion.ChainReport, error) {
	r, repo, err := c.Repository(repository)
	if err != nil {
		return nil, err
	}
	api, err := c.Server(ctx, r.Registry)
	if err != nil {
		return nil, fmt.Errorf("verifying a history needs modelreg serve, which signs its records; %s is another registry, whose records clients write", r.Registry)
	}
	records, err := api.History(ctx, r.Repository, stage)
	if err != nil {
		return nil, err
	}
	if pub == nil {
		if pub, err = api.ServerKey(ctx); err != nil {
			return nil, fmt.Errorf("reading the registry's key: %w", err)
		}
	}
	return promotion.VerifyChain(ctx, repo, stage, records, pub)
}
