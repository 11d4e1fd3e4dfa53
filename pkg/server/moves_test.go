package server

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/signature"
	"oras.land/oras-go/v2/registry"
)

// A browser session: a cookie jar, the pages' anti-forgery token read from
// the confirmation form.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

func (b browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b browser) post(path string, form url.Values, origin string) (int, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// One-click moves in the web UI: the confirmation shows the policy's
// verdict; the click moves the stage through the same gate, writing the
// same record with the reason typed; a refused move shows the policy's
// message and moves nothing; a rollback returns to the version before; a
// cross-site post or one without the token is refused.
func TestPageMoves(t *testing.T) {
	dir := t.TempDir()
	privPEM, pub, err := key.Generate([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "modelreg"), 0o750)
	os.WriteFile(filepath.Join(dir, "modelreg", "alice.pub"), pub, 0o644)
	os.WriteFile(DefaultPolicyPath(dir), []byte("version: 1\nkeys:\n  alice: "+filepath.Join(dir, "modelreg", "alice.pub")+
		"\nstages:\n  production:\n    signatures: {keys: [alice], threshold: 1}\n"), 0o644)
	addr, stop := run(t, dir, false)
	defer stop()
	a := repo(t, addr, "team/mv")
	v1 := pushModel(t, a, "1.0.0", map[string]string{"w.bin": "one"}, map[string]string{"io.modelreg.metric.acc": "0.5"})
	v2 := pushModel(t, a, "2.0.0", map[string]string{"w.bin": "two"}, map[string]string{"io.modelreg.metric.acc": "0.6"})
	// alice signs 2.0.0: its page names her key.
	priv, err := key.ParsePrivate(privPEM, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signature.Sign(context.Background(), a, registry.Reference{Registry: addr, Repository: "team/mv"}, v2, priv, signature.SignOptions{Form: signature.FormBundle}); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	b := browser{t: t, c: &http.Client{Jar: jar}, base: "http://" + addr}
	stageIs := func(stage, want string) {
		t.Helper()
		d, err := a.Resolve(context.Background(), stage)
		if got := d.Digest.String(); (want == "" && err == nil) || (want != "" && got != want) {
			t.Errorf("%s is %s (%v), want %q", stage, got, err, want)
		}
	}

	if _, page := b.get("/models/team/mv/versions/2.0.0"); !strings.Contains(page, "<td>alice</td><td>bundle</td>") || !strings.Contains(page, "<td>yes</td>") {
		t.Errorf("the version page does not show alice's signature:\n%s", page)
	}
	_, model := b.get("/models/team/mv")
	if !strings.Contains(model, `<option value="production">`) || strings.Contains(model, "disabled") {
		t.Errorf("the model page does not offer the policy's stages:\n%s", model)
	}
	status, page := b.get("/models/team/mv/promote?version=" + v1.Digest.String() + "&stage=staging")
	m := csrfRE.FindStringSubmatch(page)
	if status != 200 || m == nil || !strings.Contains(page, "does not protect staging") {
		t.Fatalf("confirmation page: %d\n%s", status, page)
	}
	token := m[1]
	form := url.Values{"stage": {"staging"}, "version": {v1.Digest.String()}, "reason": {"first <b>cut</b>"}}
	if status, _ := b.post("/models/team/mv/promote", form, ""); status != http.StatusForbidden {
		t.Errorf("a post without the token: %d", status)
	}
	form.Set("csrf", token)
	if status, _ := b.post("/models/team/mv/promote", form, "http://evil.example"); status != http.StatusForbidden {
		t.Errorf("a cross-site post: %d", status)
	}
	stageIs("staging", "")
	status, page = b.post("/models/team/mv/promote", form, "http://"+addr)
	if status != 200 || !strings.Contains(page, "staging promoted to "+v1.Digest.String()) {
		t.Fatalf("promotion: %d\n%s", status, page)
	}
	stageIs("staging", v1.Digest.String())
	form.Set("version", v2.Digest.String())
	form.Set("reason", "second")
	b.post("/models/team/mv/promote", form, "")
	stageIs("staging", v2.Digest.String())

	// The record: the server's, with the reason typed.
	_, model = b.get("/models/team/mv")
	if !strings.Contains(model, "first &lt;b&gt;cut&lt;/b&gt;") || !strings.Contains(model, "<td>second</td>") {
		t.Errorf("the stage history does not show the reasons:\n%s", model)
	}

	// Production needs alice's signature: the confirmation says so, the
	// click is refused with the policy's message, nothing moves.
	_, page = b.get("/models/team/mv/promote?version=" + v1.Digest.String() + "&stage=production")
	if !strings.Contains(page, "Not satisfied") || !strings.Contains(page, "alice") {
		t.Errorf("the confirmation of a production promotion:\n%s", page)
	}
	form.Set("stage", "production")
	form.Set("version", v1.Digest.String())
	status, page = b.post("/models/team/mv/promote", form, "")
	if status != 200 || !strings.Contains(page, "Refused: ") || !strings.Contains(page, "policy not satisfied") {
		t.Errorf("a refused promotion: %d\n%s", status, page)
	}
	stageIs("production", "")

	// Roll back staging: to 1.0.0, the version before.
	_, page = b.get("/models/team/mv/rollback?stage=staging")
	if !strings.Contains(page, "Roll back staging") || !strings.Contains(page, v1.Digest.String()) {
		t.Fatalf("rollback confirmation:\n%s", page)
	}
	status, page = b.post("/models/team/mv/rollback", url.Values{"csrf": {token}, "stage": {"staging"}, "version": {v1.Digest.String()}, "reason": {"regressed"}}, "")
	if status != 200 || !strings.Contains(page, "staging rolled back to "+v1.Digest.String()) {
		t.Fatalf("rollback: %d\n%s", status, page)
	}
	stageIs("staging", v1.Digest.String())
	if _, model = b.get("/models/team/mv"); !strings.Contains(model, `class="rollback"`) {
		t.Errorf("the rollback is not marked in the history")
	}
	// Signature counts on the model page: 2.0.0 has alice's, 1.0.0 none.
	if !strings.Contains(model, `<th scope="col">Signatures</th>`) || !regexp.MustCompile(`versions/`+v2.Digest.String()+`">2\.0\.0 </a></td>\s*<td>(<span[^>]*>[a-z]+</span> )*</td><td>[^<]*</td><td>1</td>`).MatchString(model) {
		t.Errorf("the model page does not count 2.0.0's signature:\n%s", model)
	}
	// The models page: the newest version and the last stage move.
	if _, front := b.get("/"); !strings.Contains(front, `href="/models/team/mv/versions/2.0.0">2.0.0</a>`) || !regexp.MustCompile(`<td>20\d\d-\d\d-\d\dT[^<]+</td></tr>`).MatchString(front) {
		t.Errorf("the models page lacks the latest version or the last move:\n%s", front)
	}
	// The audit report, in its three forms, tells the same moves.
	for _, f := range []string{"md", "html", "json"} {
		resp, err := b.c.Get(b.base + "/models/team/mv/audit." + f)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Disposition"), "team-mv-audit."+f) ||
			!strings.Contains(string(body), "regressed") || !strings.Contains(string(body), v2.Digest.Encoded()[:12]) {
			t.Errorf("audit.%s: %d %q\n%.600s", f, resp.StatusCode, resp.Header.Get("Content-Disposition"), body)
		}
	}
}
