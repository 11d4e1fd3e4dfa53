package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/modelreg/modelreg/pkg/wire"
)

// The answers a client just received (and the server cached) are never
// served after a write that changes them: a push, a stage move and a
// deletion, each followed at once by the same questions, also asked by 20
// clients at a time.
func TestAnswersFollowWrites(t *testing.T) {
	addr, stop := run(t, t.TempDir(), false)
	defer stop()
	a := repo(t, addr, "team/a")
	ctx := context.Background()
	const model = "application/vnd.cncf.model.manifest.v1+json"
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get("http://" + addr + wire.Prefix + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	search := "search?" + url.Values{"q": {"stage = 'production'"}}.Encode()
	state := func() string {
		var s wire.Versions
		get(search, &s)
		var prod []string
		for _, r := range s.Versions {
			prod = append(prod, r.Repository+":"+fmt.Sprint(r.Versions))
		}
		var m wire.Models
		get("models", &m)
		var v wire.Versions
		get("models/team/a/versions", &v)
		versions := 0
		if len(m.Models) > 0 {
			versions = m.Models[0].Versions
		}
		return fmt.Sprintf("production %v; %d models, team/a has %d versions (%d listed)", prod, len(m.Models), versions, len(v.Versions))
	}
	expect := func(step, want string) {
		t.Helper()
		var wg sync.WaitGroup
		got := make([]string, 20)
		for i := range got {
			wg.Add(1)
			go func() { defer wg.Done(); got[i] = state() }()
		}
		wg.Wait()
		got = append(got, state())
		for _, g := range slices.Compact(got) {
			if g != want {
				t.Errorf("after %s: %s; want %s", step, g, want)
			}
		}
	}
	v1 := push(t, a, "1.0.0", model, "v1", nil)
	expect("the first push", "production []; 1 models, team/a has 1 versions (1 listed)")
	v2 := push(t, a, "2.0.0", model, "v2", nil)
	expect("a second version", "production []; 1 models, team/a has 2 versions (2 listed)")
	if err := a.Tag(ctx, v1, "production"); err != nil {
		t.Fatal(err)
	}
	expect("a promotion", "production [team/a:[1.0.0]]; 1 models, team/a has 2 versions (2 listed)")
	if err := a.Tag(ctx, v2, "production"); err != nil {
		t.Fatal(err)
	}
	expect("a stage move", "production [team/a:[2.0.0]]; 1 models, team/a has 2 versions (2 listed)")
	if err := a.Delete(ctx, v1); err != nil {
		t.Fatal(err)
	}
	expect("a deletion", "production [team/a:[2.0.0]]; 1 models, team/a has 1 versions (1 listed)")
}
