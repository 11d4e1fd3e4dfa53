package index

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/pgtest"
	"github.com/modelreg/modelreg/pkg/wire"
	"github.com/opencontainers/go-digest"
)

// The state of a SQLite index moves to PostgreSQL whole: events with
// their seq, cursors, deliveries, robots, tar digests; the target is
// marked for a rebuild and new events continue after the copied ones.
func TestCopyStateToPostgres(t *testing.T) {
	ctx := context.Background()
	src := openAt(t, "sqlite:"+filepath.Join(t.TempDir(), "index.db"))
	for i := range 3 {
		if err := src.Emit(ctx, wire.EventPromotionRefused, "team/a", "team/a:production", wire.EventData{Stage: "production", Seq: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Fanout(ctx, []Subscriber{{Name: "hook", Wants: func(string, string) bool { return true }}}); err != nil {
		t.Fatal(err)
	}
	if err := src.Emit(ctx, wire.EventPromotionRefused, "team/a", "team/a:production", wire.EventData{Stage: "production"}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fanout(ctx, []Subscriber{{Name: "hook", Wants: func(string, string) bool { return true }}}); err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := src.PutRobot(ctx, Robot{Name: "ci", SecretHash: "abc", Grant: json.RawMessage(`{"repos":["team/*"]}`), Created: created, CreatedBy: "admin"}); err != nil {
		t.Fatal(err)
	}
	if err := src.PutTarDigest(ctx, TarLayer{Raw: digest.FromString("raw"), Path: "models/w", Mode: 0o644, Size: 1, Tar: digest.FromString("tar")}); err != nil {
		t.Fatal(err)
	}

	dst := openAt(t, pgtest.DB(t))
	if err := dst.EndRebuild(ctx); err != nil {
		t.Fatal(err)
	}
	report, err := src.CopyState(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if report["outbox_events"] != 4 || report["outbox_deliveries"] != 1 || report["robots"] != 1 || report["tar_digests"] != 1 {
		t.Errorf("copied %v", report)
	}
	if !dst.Stale() {
		t.Error("the target is not marked for a rebuild")
	}
	want, _ := src.Events(ctx, EventFilter{Limit: 100})
	got, _ := dst.Events(ctx, EventFilter{Limit: 100})
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	if string(wj) != string(gj) {
		t.Errorf("events differ:\n%s\n%s", wj, gj)
	}
	r, ok, err := dst.GetRobot(ctx, "ci")
	if err != nil || !ok || !r.Created.Equal(created) || string(r.Grant) != `{"repos":["team/*"]}` {
		t.Errorf("robot: %+v, %v, %v", r, ok, err)
	}
	if d, ok, err := dst.TarDigest(ctx, digest.FromString("raw"), "models/w", 0o644); err != nil || !ok || d != digest.FromString("tar") {
		t.Errorf("tar digest: %s %v %v", d, ok, err)
	}
	if err := dst.Emit(ctx, wire.EventPromotionRefused, "team/a", "team/a:staging", wire.EventData{}); err != nil {
		t.Fatal(err)
	}
	all, _ := dst.Events(ctx, EventFilter{Limit: 100})
	if len(all) != 5 || all[4].Seq <= all[3].Seq {
		t.Errorf("a new event after the copy: %+v", all)
	}
	// A second copy into the same database is refused: state is never merged.
	if _, err := src.CopyState(ctx, dst); err == nil {
		t.Error("a copy into a database holding events was accepted")
	}
}
