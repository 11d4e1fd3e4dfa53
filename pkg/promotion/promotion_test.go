package promotion_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/modelreg/modelreg/pkg/promotion"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// racer moves the stage to another version right after the promotion
// record is written: the moment a concurrent promoter would win.
type racer struct {
	*remote.Repository
	stage string
	other ocispec.Descriptor
	fired bool
}

func (r *racer) Manifests() registry.ManifestStore { return racingStore{r.Repository.Manifests(), r} }

type racingStore struct {
	registry.ManifestStore
	r *racer
}

func (s racingStore) Push(ctx context.Context, d ocispec.Descriptor, c io.Reader) error {
	if err := s.ManifestStore.Push(ctx, d, c); err != nil {
		return err
	}
	if !s.r.fired {
		s.r.fired = true
		return s.r.Repository.Tag(ctx, s.r.other, s.r.stage)
	}
	return nil
}

// startRegistry runs plain distribution in process: no modelreg
// extension, so the client writes its own records, as against any registry.
func startRegistry(t *testing.T) string {
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{Storage: configuration.Storage{
		"filesystem": configuration.Parameters{"rootdirectory": t.TempDir()},
		"delete":     configuration.Parameters{"enabled": true},
	}}
	cfg.HTTP.Secret = "test"
	cfg.Log.AccessLog.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(handlers.NewApp(ctx, cfg))
	t.Cleanup(func() { srv.Close(); cancel() })
	return strings.TrimPrefix(srv.URL, "http://")
}

func pushManifest(t *testing.T, repo *remote.Repository, tag, content string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	layer := ocispec.Descriptor{MediaType: "application/vnd.cncf.model.weight.v1.raw", Digest: digest.FromString(content), Size: int64(len(content)),
		Annotations: map[string]string{"org.cncf.model.filepath": "w.bin"}}
	if err := repo.Push(ctx, layer, bytes.NewReader([]byte(content))); err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.DescriptorEmptyJSON
	repo.Push(ctx, cfg, bytes.NewReader(cfg.Data))
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.cncf.model.manifest.v1+json", Config: ocispec.Descriptor{MediaType: cfg.MediaType, Digest: cfg.Digest, Size: cfg.Size},
		Layers: []ocispec.Descriptor{layer}})
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	if err := repo.PushReference(ctx, d, bytes.NewReader(m), tag); err != nil {
		t.Fatal(err)
	}
	return d
}

// A promotion that loses a race on a plain registry says so, leaves the
// winner's tag alone, and leaves no record of a move that did not happen.
func TestConcurrentMoveIsDetected(t *testing.T) {
	addr := startRegistry(t)
	ctx := context.Background()
	repo, err := remote.NewRepository(addr + "/team/race")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	ref := repo.Reference
	v1 := pushManifest(t, repo, "1.0.0", "one")
	v2 := pushManifest(t, repo, "2.0.0", "two")
	v3 := pushManifest(t, repo, "3.0.0", "three")
	opts := promotion.Options{Actor: "test", Now: time.Now}
	if _, err := promotion.Promote(ctx, repo, ref, v1, "production", opts); err != nil {
		t.Fatal(err)
	}

	r := &racer{Repository: repo, stage: "production", other: v3}
	_, err = promotion.Promote(ctx, r, ref, v2, "production", opts)
	if !errors.Is(err, promotion.ErrConflict) {
		t.Fatalf("lost race: %v, want promotion.ErrConflict", err)
	}
	if d, _ := repo.Resolve(ctx, "production"); d.Digest != v3.Digest {
		t.Errorf("production is %s, want the winner %s", d.Digest, v3.Digest)
	}
	hist, err := promotion.History(ctx, repo, ref, "production")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range hist {
		if rec.Digest == v2.Digest.String() {
			t.Errorf("the losing promotion left a record: %+v", rec)
		}
	}
	if len(hist) != 1 || hist[0].Digest != v1.Digest.String() {
		t.Errorf("history: %+v", hist)
	}
}

func TestAtAndSort(t *testing.T) {
	t0 := time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)
	rs := []promotion.Record{
		{Digest: "a", Time: t0},
		{Digest: "c", Previous: "b", Time: t0.Add(2 * time.Hour)},
		{Digest: "b", Previous: "a", Time: t0.Add(time.Hour)},
	}
	promotion.Sort(rs)
	if rs[0].Digest != "c" || rs[2].Digest != "a" {
		t.Fatalf("Sort: %+v", rs)
	}
	for at, want := range map[time.Duration]string{-time.Minute: "", 0: "a", 90 * time.Minute: "b", 3 * time.Hour: "c"} {
		got := ""
		if r := promotion.At(rs, t0.Add(at)); r != nil {
			got = r.Digest
		}
		if got != want {
			t.Errorf("promotion.At(+%s) = %q, want %q", at, got, want)
		}
	}
}
