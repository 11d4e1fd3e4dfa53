package e2e

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// A read-only user (serve --read-only-user) pulls but cannot push; a
// read-only user missing from the htpasswd file stops the server at start.
// Repeated wrong passwords from one address are answered 429.
func TestReadOnlyUserAndThrottle(t *testing.T) {
	htpasswd := htpasswdFile(t, "alice", "reader")

	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a guard, not an assertion
	defer cancel()
	cmd := exec.CommandContext(ctx, modelregBin, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--htpasswd", htpasswd, "--read-only-user", "raeder")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `"raeder"`) || !strings.Contains(string(out), "htpasswd") {
		t.Errorf("serve with an unknown read-only user: %v\n%s", err, out)
	}

	reg := startServer(t, "--htpasswd", htpasswd, "--read-only-user", "reader")
	ref := reg.Addr + "/team/ro:1.0.0"
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "w.bin"), "weights", 0o644)
	as := func(user string) []string {
		return []string{"MODELREG_USERNAME=" + user, "MODELREG_PASSWORD=" + user + "-pw"}
	}
	if r := e.exec("", as("alice"), modelregBin, "push", ref, src); r.Code != 0 {
		t.Fatalf("alice push: %s", r.Stderr)
	}
	if r := e.exec("", as("reader"), modelregBin, "pull", ref, "-o", filepath.Join(e.dir, "out")); r.Code != 0 {
		t.Errorf("reader pull: %s", r.Stderr)
	}
	r := e.exec("", as("reader"), modelregBin, "push", reg.Addr+"/team/ro:2.0.0", src)
	if r.Code == 0 || !strings.Contains(r.Stderr, "read-only") {
		t.Errorf("reader push: exit %d\n%s", r.Code, r.Stderr)
	}

	get := func(user, pw string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Addr+"/v2/", nil)
		req.SetBasicAuth(user, pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range 10 {
		if resp := get("alice", "guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, resp.StatusCode)
		}
	}
	resp := get("alice", "alice-pw")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
		t.Errorf("after 10 failures: %d, Retry-After %q; want 429, 60", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// htpasswdFile writes an htpasswd file (bcrypt) of users, each with the
// password USER-pw.
func htpasswdFile(t *testing.T, users ...string) string {
	t.Helper()
	var lines []string
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, path, strings.Join(lines, "\n")+"\n", 0o600)
	return path
}
