package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/wire"
)

// accessYAML is docs/access.md's worked example: the ML team pushes and
// signs team/* models, a CI robot is created for them, rita (release
// manager) alone moves production, quinn may move staging only, public/**
// is readable by anyone, root administers everything.
const accessYAML = `groups:
  ml-team: [alice, bob]
  release: [rita]
rules:
  - subjects: [group:ml-team]
    repositories: ["team/*"]
    actions: [push, sign]
  - subjects: [group:release]
    repositories: ["team/**"]
    actions: ["promote:production", "promote:staging"]
  - subjects: [user:quinn]
    repositories: ["team/*"]
    actions: ["promote:staging"]
  - subjects: [anonymous]
    repositories: ["public/**"]
    actions: [pull]
  - subjects: [user:root]
    repositories: ["**"]
    actions: [admin]
`

// accessPolicyYAML is the trust policy beside it: a stage needs one
// signature by alice's key.
const accessTrustYAML = `version: 1
keys:
  alice: alice.pub
stages:
  staging:
    signatures: {keys: [alice], threshold: 1}
  production:
    signatures: {keys: [alice], threshold: 1}
`

func as(user string) []string {
	return []string{"MODELREG_USERNAME=" + user, "MODELREG_PASSWORD=" + user + "-pw"}
}

// tokenFor asks the token endpoint as a user would (basic credentials).
func tokenFor(t *testing.T, addr, user, pass string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {"modelreg"}, "scope": scopes}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/auth/token?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&tok) != nil || tok.Token == "" {
		t.Fatalf("token for %s %v: %s", user, scopes, resp.Status)
	}
	return tok.Token
}

func bearerGet(t *testing.T, rawURL, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate") + " " + string(b)
}

// Who may do what, enforced on every route for every client: token auth
// with the real oras, crane, cosign v3 and containerd; robot accounts;
// per-stage rights through modelreg, oras tag and the web UI; anonymous
// read only where granted; expired and revoked credentials refused; a
// token scoped to one repository useless on another; cross-repository
// mounts needing pull on the source; refusals recorded.
func TestAccess(t *testing.T) {
	e := newEnv(t)
	e.ok("keygen", "--output-key-prefix", "alice")
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), accessTrustYAML, 0o644)
	writeFile(t, filepath.Join(e.dir, "access.yaml"), accessYAML, 0o644)
	htpasswd := htpasswdFile(t, "root", "alice", "bob", "rita", "quinn", "mallory")
	reg := startServer(t, "--htpasswd", htpasswd, "--access", filepath.Join(e.dir, "access.yaml"),
		"--policy", filepath.Join(e.dir, "policy.yaml"), "--token-lifetime", "3s")
	addr := reg.Addr
	repo := addr + "/team/a"
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "model.safetensors"), "weights one", 0o644)
	run := func(user string, bin string, args ...string) result {
		t.Helper()
		return e.exec("", as(user), bin, args...)
	}
	mustOK := func(r result, what string) {
		t.Helper()
		if r.Code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", what, r.Code, r.Stdout, r.Stderr)
		}
	}
	mustFail := func(r result, what string, want ...string) {
		t.Helper()
		if r.Code == 0 {
			t.Fatalf("%s: allowed, want refused\n%s", what, r.Stdout)
		}
		for _, w := range want {
			if !strings.Contains(r.Stdout+r.Stderr, w) {
				t.Errorf("%s: output lacks %q:\n%s%s", what, w, r.Stdout, r.Stderr)
			}
		}
	}

	// The team pushes and signs through modelreg (token flow by oras-go).
	mustOK(run("alice", modelregBin, "push", repo+":1.0.0", src), "alice push")
	mustOK(run("alice", modelregBin, "sign", repo+":1.0.0", "--key", "alice.key"), "alice sign")
	mustFail(run("alice", modelregBin, "push", addr+"/other/b:1.0.0", src), "alice push to other/b", "denied (403)")
	mustFail(run("mallory", modelregBin, "pull", repo+":1.0.0", "-o", filepath.Join(e.dir, "m-out")), "mallory pull (no rule)")

	// A CI robot created by root: push and pull on team/*, nothing else.
	r := run("root", modelregBin, "robot", "create", addr, "ci-train", "--repo", "team/*", "--actions", "pull,push", "--description", "training CI")
	mustOK(r, "robot create")
	secret := strings.TrimSpace(r.Stdout)
	if !strings.HasPrefix(secret, "mrr_") {
		t.Fatalf("robot secret %q", secret)
	}
	mustFail(run("alice", modelregBin, "robot", "create", addr, "sneaky", "--repo", "team/*", "--actions", "push"), "alice creates a robot", "admin")
	robotCfg := filepath.Join(e.dir, "robot-docker")
	robotEnv := []string{"DOCKER_CONFIG=" + robotCfg}
	if r := e.exec(secret, robotEnv, orasBin, "login", "--plain-http", addr, "-u", "robot$ci-train", "--password-stdin"); r.Code != 0 {
		t.Fatalf("oras login as the robot: %s", r.Stderr)
	}
	writeFile(t, filepath.Join(e.dir, "ci.bin"), "ci artifact", 0o644)
	orasPush := func(ref string) result {
		return e.exec("", robotEnv, orasBin, "push", "--plain-http", ref, "ci.bin:application/octet-stream")
	}
	mustOK(orasPush(addr+"/team/ci:run-1"), "the robot pushes to team/ci with oras")
	mustFail(orasPush(addr+"/other/b:run-1"), "the robot pushes to other/b with oras", "403")
	mustFail(orasPush(addr+"/team/ci/deep:run-1"), "the robot pushes to team/ci/deep (team/* is one segment)")
	// crane and modelreg log in with the same secret.
	if r := e.exec("", robotEnv, craneBin, "auth", "login", addr, "-u", "robot$ci-train", "-p", secret, "--insecure"); r.Code != 0 {
		t.Fatalf("crane auth login: %s", r.Stderr)
	}
	if r := e.exec("", robotEnv, craneBin, "ls", "--insecure", addr+"/team/ci"); r.Code != 0 || !strings.Contains(r.Stdout, "run-1") {
		t.Errorf("crane ls as the robot: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := e.exec("", robotEnv, craneBin, "tag", "--insecure", addr+"/team/ci:run-1", "latest"); r.Code != 0 {
		t.Errorf("crane tag latest (an unprotected tag: push moves it): %s", r.Stderr)
	}
	if r := e.exec("", robotEnv, craneBin, "copy", "--insecure", addr+"/team/ci:run-1", addr+"/other/c:run-1"); r.Code == 0 {
		t.Error("crane copy into other/c as the robot was allowed")
	}
	var robots []wire.Robot
	if err := json.Unmarshal([]byte(e.exec("", as("root"), modelregBin, "robot", "list", addr, "--output", "json").Stdout), &robots); err != nil || len(robots) != 1 || robots[0].LastUsed.IsZero() {
		t.Errorf("robot list: %+v %v", robots, err)
	}

	// cosign v3 signs as alice (sign right); mallory cannot.
	cosignEnv := func(user string) []string {
		cfg := filepath.Join(e.dir, "cosign-"+user)
		if r := e.exec("", []string{"DOCKER_CONFIG=" + cfg}, craneBin, "auth", "login", addr, "-u", user, "-p", user+"-pw", "--insecure"); r.Code != 0 {
			t.Fatalf("crane auth login %s: %s", user, r.Stderr)
		}
		return []string{"DOCKER_CONFIG=" + cfg}
	}
	v1 := resolveAs(t, e, "alice", repo+":1.0.0")
	signArgs := []string{"sign", "--key", "alice.key", "--tlog-upload=false", "--use-signing-config=false", "--allow-insecure-registry", "-y", repo + "@" + v1}
	if r := e.exec("", cosignEnv("alice"), cosign3Bin, signArgs...); r.Code != 0 {
		t.Errorf("cosign v3 sign as alice: %s", r.Stderr)
	}
	if r := e.exec("", cosignEnv("mallory"), cosign3Bin, signArgs...); r.Code == 0 {
		t.Error("cosign v3 sign as mallory was allowed")
	}

	// Stage rights on top of the signature gate: quinn moves staging only,
	// whatever the client; rita moves production.
	mustOK(run("quinn", modelregBin, "promote", repo+":1.0.0", "--to", "staging"), "quinn promotes to staging")
	mustFail(run("quinn", modelregBin, "promote", repo+":1.0.0", "--to", "production"), "quinn promotes to production", "promote:production")
	quinnCfg := cosignEnv("quinn")
	if r := e.exec("", quinnCfg, orasBin, "tag", "--plain-http", repo+":1.0.0", "production"); r.Code == 0 {
		t.Error("oras tag production as quinn was allowed")
	}
	if r := e.exec("", quinnCfg, craneBin, "tag", "--insecure", repo+":1.0.0", "production"); r.Code == 0 {
		t.Error("crane tag production as quinn was allowed")
	}
	if r := run("alice", modelregBin, "promote", repo+":1.0.0", "--to", "production"); r.Code == 0 {
		t.Error("alice (push, sign) promoted to production")
	}
	// The web UI: no button for quinn, and the form's POST is refused.
	if page := uiGet(t, addr, "/models/team/a/promote?stage=production&version=1.0.0", "quinn"); !strings.Contains(page, "may not move stages") {
		t.Errorf("the promote page offers quinn the production button:\n%s", page)
	}
	if page := uiGet(t, addr, "/models/team/a/promote?stage=staging&version=1.0.0", "quinn"); strings.Contains(page, "may not move stages") {
		t.Errorf("the promote page refuses quinn the staging button:\n%s", page)
	}
	if code, page := uiPost(t, addr, "/models/team/a/promote", "quinn", url.Values{"stage": {"production"}, "version": {"1.0.0"}}); code == http.StatusOK && !strings.Contains(page, "Refused") {
		t.Errorf("quinn's POST to move production: %d\n%s", code, page)
	}
	if code, page := uiPost(t, addr, "/models/team/a/promote", "rita", url.Values{"stage": {"production"}, "version": {"1.0.0"}}); code != http.StatusOK || !strings.Contains(page, "promoted to") {
		t.Errorf("rita's POST to move production: %d\n%s", code, page)
	}
	if got := resolveAs(t, e, "rita", repo+":production"); got != v1 {
		t.Errorf("production holds %s after rita's move, want %s", got, v1)
	}

	// Anonymous: public/** readable; team/a is not (challenged).
	mustOK(run("root", modelregBin, "push", addr+"/public/demo:1.0.0", src), "root push to public")
	if code, _ := bearerGet(t, "http://"+addr+"/v2/public/demo/tags/list", ""); code != http.StatusOK {
		t.Errorf("anonymous tags list of public/demo: %d", code)
	}
	// Every read route of team/a refuses an anonymous client and one
	// without pull (mallory): the Referrers API and the model API too.
	for _, path := range []string{"/v2/team/a/referrers/" + v1, "/v2/team/a/manifests/1.0.0", "/v2/team/a/image/manifests/1.0.0",
		"/v2/_modelreg/v1/models/team/a/versions", "/v2/_modelreg/v1/models/team/a/referrers/" + v1, "/v2/_modelreg/v1/models/team/a/stages/production/history"} {
		if code, _ := bearerGet(t, "http://"+addr+path, ""); code != http.StatusUnauthorized {
			t.Errorf("anonymous GET %s: %d", path, code)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.SetBasicAuth("mallory", "mallory-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("mallory GET %s: %d", path, resp.StatusCode)
		}
	}
	if page := uiGet(t, addr, "/", "mallory"); strings.Contains(page, "team/a") {
		t.Error("the model list shows mallory team/a")
	}
	code, body := bearerGet(t, "http://"+addr+"/v2/team/a/tags/list", "")
	if code != http.StatusUnauthorized || !strings.Contains(body, `Bearer realm="http://`+addr+`/auth/token",service="modelreg",scope="repository:team/a:pull"`) {
		t.Errorf("anonymous tags list of team/a: %d %s", code, body)
	}
	// The catalog lists only what the caller may read.
	tok := tokenFor(t, addr, "", "", "registry:catalog:*")
	if _, body := bearerGet(t, "http://"+addr+"/v2/_catalog", tok); strings.Contains(body, "team/a") {
		t.Errorf("an anonymous catalog lists team/a: %s", body)
	}

	// A token for one repository is no use on another; it expires.
	tok = tokenFor(t, addr, "alice", "alice-pw", "repository:team/a:pull")
	if code, _ := bearerGet(t, "http://"+addr+"/v2/team/a/tags/list", tok); code != http.StatusOK {
		t.Errorf("alice's team/a token on team/a: %d", code)
	}
	if code, body := bearerGet(t, "http://"+addr+"/v2/team/ci/tags/list", tok); code != http.StatusForbidden || !strings.Contains(body, "not issued for") {
		t.Errorf("alice's team/a token on team/ci: %d %s", code, body)
	}
	time.Sleep(4 * time.Second) // the server's --token-lifetime is 3s
	if code, body := bearerGet(t, "http://"+addr+"/v2/team/a/tags/list", tok); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("an expired token: %d %s", code, body)
	}

	// Revocation stops the robot's secret and its live tokens at once.
	rtok := tokenFor(t, addr, "robot$ci-train", secret, "repository:team/ci:pull")
	mustOK(run("root", modelregBin, "robot", "revoke", addr, "ci-train"), "robot revoke")
	if code, body := bearerGet(t, "http://"+addr+"/v2/team/ci/tags/list", rtok); code != http.StatusUnauthorized || !strings.Contains(body, "revoked") {
		t.Errorf("a revoked robot's token: %d %s", code, body)
	}
	mustFail(orasPush(addr+"/team/ci:run-2"), "the revoked robot pushes")

	// A cross-repository mount needs pull on the source.
	mustOK(run("root", modelregBin, "push", addr+"/secret/x:1.0.0", src), "root push to secret/x")
	blob := strings.TrimSpace(e.exec("", nil, "sh", "-c", "sha256sum m/model.safetensors | cut -d' ' -f1").Stdout)
	tok = tokenFor(t, addr, "alice", "alice-pw", "repository:team/b:pull,push", "repository:secret/x:pull")
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://%s/v2/team/b/blobs/uploads/?mount=sha256:%s&from=secret/x", addr, blob), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("alice mounting a blob from secret/x: %d", resp.StatusCode)
	}

	// containerd pulls the image view with a robot's credentials.
	r = run("root", modelregBin, "robot", "create", addr, "deploy", "--repo", "team/**", "--actions", "pull")
	mustOK(r, "robot create deploy")
	sock := containerd(t)
	if out, err := cmdOut("ctr", "--address", sock, "image", "pull", "--plain-http", "--user", "robot$deploy:"+strings.TrimSpace(r.Stdout), repo+"/image:production"); err != nil {
		t.Errorf("ctr pull of the image view with the deploy robot: %v\n%s", err, out)
	}
	deploySecret := strings.TrimSpace(r.Stdout)
	if out, err := cmdOut(debTool(t, "skopeo"), "inspect", "--tls-verify=false", "--creds", "robot$deploy:"+deploySecret, "docker://"+repo+"/image:1.0.0"); err != nil || !strings.Contains(out, "Digest") {
		t.Errorf("skopeo inspect of the image view with the deploy robot: %v\n%s", err, out)
	}
	if out, err := cmdOut(debTool(t, "skopeo"), "inspect", "--tls-verify=false", "--creds", "robot$deploy:wrong", "docker://"+repo+"/image:1.0.0"); err == nil {
		t.Errorf("skopeo inspect with a wrong robot secret succeeded:\n%s", out)
	}
	// modelreg login stores the robot's credentials like any user's.
	deployEnv := []string{"DOCKER_CONFIG=" + filepath.Join(e.dir, "deploy-docker")}
	if r := e.exec(deploySecret+"\n", deployEnv, modelregBin, "login", addr, "-u", "robot$deploy", "--password-stdin"); r.Code != 0 {
		t.Fatalf("modelreg login as the deploy robot: %s", r.Stderr)
	}
	if r := e.exec("", deployEnv, modelregBin, "pull", repo+":1.0.0", "-o", filepath.Join(e.dir, "deployed")); r.Code != 0 {
		t.Errorf("modelreg pull as the deploy robot: %s", r.Stderr)
	}
	if r := e.exec("", deployEnv, modelregBin, "push", repo+":9.0.0", src); r.Code == 0 {
		t.Error("the pull-only deploy robot pushed")
	}
	if out, err := cmdOut("ctr", "--address", sock, "image", "pull", "--plain-http", repo+"/image:1.0.0"); err == nil {
		t.Errorf("an anonymous ctr pull of team/a's image view succeeded:\n%s", out)
	}

	// Refusals are recorded: counted on /metrics, and a refused stage move
	// is an event (the audit trail of who tried to move production).
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.SetBasicAuth("root", "root-pw")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `modelreg_denials_total{kind="access",right="promote"}`) || !strings.Contains(string(metrics), `modelreg_denials_total{kind="auth",right=""}`) {
		t.Errorf("/metrics does not count the access denials:\n%s", metrics)
	}
	var evs wire.Events
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/v2/_modelreg/v1/events?type=promotion.refused&repository=team/a", nil)
	req.SetBasicAuth("root", "root-pw")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&evs)
	resp.Body.Close()
	quinnRefused := 0
	for _, ev := range evs.Events {
		var d wire.EventData
		json.Unmarshal(ev.Data, &d)
		if d.Stage == "production" && strings.Contains(d.Actor, "quinn") {
			quinnRefused++
		}
	}
	// The audit report lists them.
	r = run("rita", modelregBin, "audit", repo, "--format", "json", "--policy", "policy.yaml")
	mustOK(r, "audit as rita")
	var rep struct {
		RefusedMoves []struct{ Stage, Actor, Reason string } `json:"refusedMoves"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || len(rep.RefusedMoves) < 3 || !strings.Contains(rep.RefusedMoves[0].Actor, "quinn") {
		t.Errorf("the audit report's refused moves: %+v %v", rep.RefusedMoves, err)
	}
	if quinnRefused < 3 {
		t.Errorf("%d refused production moves by quinn recorded as events, want at least 3 (modelreg, oras, crane, the web UI): %+v", quinnRefused, evs.Events)
	}
}

// resolveAs resolves a reference with a user's credentials.
func resolveAs(t *testing.T, e *env, user, ref string) string {
	t.Helper()
	r := e.exec("", as(user), modelregBin, "inspect", ref, "--output", "json")
	if r.Code != 0 {
		t.Fatalf("inspect %s as %s: %s", ref, user, r.Stderr)
	}
	return decode[catalog.Inspection](t, r.Stdout).Version.Descriptor.Digest.String()
}

func uiGet(t *testing.T, addr, path, user string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.SetBasicAuth(user, user+"-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// uiPost submits the web UI's move form as a browser would: the CSRF
// cookie from the confirmation page, the same value in the form, the
// registry's own Origin.
func uiPost(t *testing.T, addr, path, user string, form url.Values) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path+"?"+form.Encode(), nil)
	req.SetBasicAuth(user, user+"-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var csrf string
	for _, c := range resp.Cookies() {
		if c.Name == "modelreg_csrf" {
			csrf = c.Value
		}
	}
	form.Set("csrf", csrf)
	req, _ = http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(form.Encode()))
	req.SetBasicAuth(user, user+"-pw")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://"+addr)
	req.AddCookie(&http.Cookie{Name: "modelreg_csrf", Value: csrf})
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func cmdOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
