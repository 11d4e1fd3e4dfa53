package transfer

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// A registry that answers 503 to everything costs one try per attempt of
// the retry policy (4 by default), whether the transport retries the
// request (it can replay it) or the transfer is retried as a whole (its
// body is a stream): never the product of the two. Before there was one
// policy, each of these cost 24 requests (4 blob attempts × 6 transport
// attempts) and about 28 s.
func TestRetriesArePolicyAttempts(t *testing.T) {
	const attempts = 4 // remote.DefaultRetryPolicy.Attempts, documented in docs/transfer.md
	if fastRetry.Attempts != attempts {
		t.Fatalf("the default policy makes %d attempts; docs/transfer.md says %d", fastRetry.Attempts, attempts)
	}
	ctx := context.Background()
	cases := []struct {
		name string
		// pushed first, before the failure starts, when set
		pushFirst bool
		method    string // the failing requests
		path      string
		run       func(t *testing.T, reg *testRegistry) error
		want      string // the requests counted: method and part of the path
		// total is every request of the command: the failing ones and
		// the ones before them that succeeded
		total int
	}{
		{"manifest GET (pull)", false, http.MethodGet, "/manifests/", pullRun, "GET /v2/team/m/manifests/1.0.0", 4},
		{"manifest HEAD (resolve, transport)", false, http.MethodHead, "/manifests/", func(t *testing.T, reg *testRegistry) error {
			repo, _ := connect(t, reg.host, "team/m:1.0.0")
			_, err := repo.Resolve(ctx, "1.0.0")
			return err
		}, "HEAD /v2/team/m/manifests/1.0.0", 4},
		// manifest, then the config blob 4 times
		{"blob GET (pull)", true, http.MethodGet, "/blobs/sha256:", pullRun, "GET /v2/team/m/blobs/sha256:", 1 + 4},
		// HEAD of the tag, then 4 attempts to open the upload
		{"small blob push, streamed", false, http.MethodPost, "/blobs/uploads/", pushRun(true), "POST /v2/team/m/blobs/uploads/", 1 + 4},
		// HEAD of the tag and of the blob, then 4 attempts to open the upload
		{"small blob push, hashed first", false, http.MethodPost, "/blobs/uploads/", pushRun(false), "POST /v2/team/m/blobs/uploads/", 2 + 4},
		// HEAD of the tag, then 4 attempts of POST and PATCH
		{"chunk PATCH, streamed", false, http.MethodPatch, "/blobs/uploads/", pushRun(true), "PATCH /v2/team/m/blobs/uploads/", 1 + 4*2},
		// HEAD of the tag, POST PATCH PUT of the file, HEAD POST PUT of
		// the config, then 4 PUTs of the manifest
		{"manifest PUT (transport)", false, http.MethodPut, "/manifests/", pushRun(true), "PUT /v2/team/m/manifests/1.0.0", 1 + 3 + 3 + 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg := newTestRegistry(t)
			if c.pushFirst {
				if err := pushRun(true)(t, reg); err != nil {
					t.Fatal(err)
				}
			}
			reg.reset()
			reg.failing(c.method, c.path)
			err := c.run(t, reg)
			if err == nil || !strings.Contains(err.Error(), "503") {
				t.Fatalf("err = %v, want the registry's 503", err)
			}
			method, path, _ := strings.Cut(c.want, " ")
			if got := reg.requests(method+" ", path); len(got) != attempts {
				t.Errorf("%d requests %s, want %d:\n%s", len(got), c.want, attempts, strings.Join(reg.requests(), "\n"))
			}
			if all := reg.requests(); len(all) != c.total {
				t.Errorf("%d requests in all, want %d:\n%s", len(all), c.total, strings.Join(all, "\n"))
			}
		})
	}
}

// pullRun pulls team/m:1.0.0 with the fast retry policy.
func pullRun(t *testing.T, reg *testRegistry) error {
	repo, ref := connect(t, reg.host, "team/m:1.0.0")
	_, err := Pull(context.Background(), repo, ref, filepath.Join(t.TempDir(), "out"), PullOptions{Retry: fastRetry})
	return err
}

// pushRun pushes a one-file model as team/m:1.0.0, streamed (the CLI's
// way) or hashed first.
func pushRun(streamed bool) func(t *testing.T, reg *testRegistry) error {
	return func(t *testing.T, reg *testRegistry) error {
		_, files := writeModel(t, map[string]string{"model.safetensors": "weights"})
		repo, ref := connect(t, reg.host, "team/m:1.0.0")
		opts := PushOptions{Retry: fastRetry}
		if streamed {
			opts.Streamer = streamer(t, reg.host, "team/m")
		}
		_, err := Push(context.Background(), repo, ref, files, opts)
		return err
	}
}
