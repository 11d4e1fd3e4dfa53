package e2e

import (
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// Behind --htpasswd the web UI asks for the same login as the API; a
// read-only user sees the move buttons disabled and is refused if they
// post anyway; a writer sees them enabled.
func TestWebUIRights(t *testing.T) {
	htpasswd := htpasswdFile(t, "writer", "reader")
	reg := startServer(t, "--htpasswd", htpasswd, "--read-only-user", "reader")
	e := newEnv(t)
	e.exec("writer-pw\n", nil, modelregBin, "login", reg.Addr, "-u", "writer", "--password-stdin")
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "model.safetensors"), "w", 0o644)
	e.ok("push", reg.Addr+"/team/r:1.0.0", src)

	get := func(user string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+reg.Addr+"/models/team/r", nil)
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, _ := get(""); status != http.StatusUnauthorized {
		t.Errorf("the model page without a login: %d", status)
	}
	if status, page := get("reader"); status != 200 || !strings.Contains(page, `disabled title="your account may not move stages"`) {
		t.Errorf("the reader's model page (%d) does not disable the buttons:\n%s", status, page)
	}
	if status, page := get("writer"); status != 200 || strings.Contains(page, "disabled") {
		t.Errorf("the writer's model page (%d) disables the buttons", status)
	}
	form := url.Values{"stage": {"staging"}, "version": {"1.0.0"}, "reason": {"x"}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+reg.Addr+"/models/team/r/promote", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("reader", "reader-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("the reader's promotion: %d", resp.StatusCode)
	}
}
