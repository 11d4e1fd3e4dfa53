package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser starts Debian's chromium, headless, for one test (make test
// installs it: deb-tools). Processes stop with the test.
func browserCtx(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run `make deb-tools` (chromium from Debian), as `make test` does")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // the tests run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// shot saves a screenshot of the page under $MODELREG_UI_SCREENSHOTS (the
// docs/ui/ images are made this way), when it is set.
func shot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("MODELREG_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mainText is the text of the page's main element.
func mainText(t *testing.T, ctx context.Context) string {
	t.Helper()
	body, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// The web UI in a real browser: the models page, a search with and
// without an error, a version page with its files, signature, lineage
// picture, evaluation and model card, a one-click rollback (checked with oras and
// modelreg history), a refused promotion that moves nothing, a forged
// cross-site form that moves nothing, and a <script> in a label and in a
// README that does not run.
func TestWebUIInBrowser(t *testing.T) {
	e, reg := gatedWith(t, `version: 1
keys:
  alice: alice.pub
stages:
  production:
    signatures: {keys: [alice], threshold: 1}
`)
	repo := reg.Addr + "/team/fraud"
	src := filepath.Join(e.dir, "m")
	writeFile(t, filepath.Join(src, "model.safetensors"), "weights one", 0o644)
	writeFile(t, filepath.Join(src, "README.md"), "# Fraud detector\n\nTrained weekly.\n\n<script>document.title='pwned-readme'</script>\n", 0o644)
	e.ok("push", repo+":1.0.0", src, "--metric", "accuracy=0.91", "--label", "note=<script>document.title='pwned-label'</script>", "--dataset", "s3://data/train.parquet")
	e.ok("eval", "add", repo+":1.0.0", "--metric", "auc=0.95", "--dataset", "s3://data/holdout.parquet")
	writeFile(t, filepath.Join(src, "model.safetensors"), "weights two", 0o644)
	e.ok("push", repo+":2.0.0", src, "--metric", "accuracy=0.93", "--base-model", repo+":1.0.0")
	e.ok("sign", repo+":2.0.0", "--key", "alice.key")
	e.ok("promote", repo+":1.0.0", "--to", "staging", "--reason", "first")
	e.ok("promote", repo+":2.0.0", "--to", "staging", "--reason", "better")
	v1 := resolve(t, e, repo+":1.0.0")
	base := "http://" + reg.Addr

	ctx := browserCtx(t)
	text := func(url string) string {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		body, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		return body
	}

	if body := text(base + "/"); !strings.Contains(body, "team/fraud") || !strings.Contains(body, "staging") {
		t.Errorf("models page: %s", body)
	}
	shot(t, ctx, "models")
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#q"), "metrics.accuracy >= 0.92"), chromedp.Submit(chromedp.CSS("#q")),
		chromedp.WaitVisible(chromedp.CSS("main table"))); err != nil {
		t.Fatal(err)
	}
	body := mainText(t, ctx)
	if !strings.Contains(body, "2.0.0") || strings.Contains(body, "1.0.0") {
		t.Errorf("search results: %s", body)
	}
	shot(t, ctx, "search")
	if body := text(base + "/?q=metrics.accuracy+%3E"); !strings.Contains(body, "position 18") {
		t.Errorf("search error: %s", body)
	}
	shot(t, ctx, "search-error")

	// The version page: files, the signature by name, the lineage picture,
	// the model card; neither script ran.
	body = text(base + "/models/team/fraud/versions/1.0.0")
	for _, want := range []string{"model.safetensors", "README.md", "s3://data/train.parquet", "Fraud detector", "made from it", "auc = 0.95", "s3://data/holdout.parquet"} {
		if !strings.Contains(body, want) {
			t.Errorf("version 1.0.0 page lacks %q", want)
		}
	}
	title, _ := chromedp.Run(ctx, chromedp.Title())
	if strings.Contains(title, "pwned") {
		t.Errorf("a script from the pushed metadata ran: title %q", title)
	}
	shot(t, ctx, "version")
	body = text(base + "/models/team/fraud/versions/2.0.0")
	if !strings.Contains(body, "alice") || !strings.Contains(body, "bundle") {
		t.Errorf("version 2.0.0 page does not show alice's signature: %s", body)
	}
	nodes, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("svg.lineage a").length`))
	if nodes < 2 {
		t.Errorf("the lineage picture has %d linked nodes, want the version and its base", nodes)
	}
	text(base + "/models/team/fraud/compare?a=1.0.0&b=2.0.0")
	shot(t, ctx, "compare")

	// One click (and a reason) rolls staging back to 1.0.0.
	text(base + "/models/team/fraud")
	shot(t, ctx, "model")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.Search(`//button[normalize-space()="Roll back staging"]`)),
		chromedp.WaitVisible(chromedp.CSS("#reason")),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "rollback-confirm")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#reason"), "accuracy regressed in canary"),
		chromedp.Click(chromedp.Search(`//button[normalize-space()="Roll back"]`)),
		chromedp.WaitVisible(chromedp.CSS("#result")),
	); err != nil {
		t.Fatal(err)
	}
	body = mainText(t, ctx)
	if !strings.Contains(body, "rolled back to "+v1) {
		t.Errorf("after the click: %s", body)
	}
	if got := strings.TrimSpace(e.oras("resolve", repo+":staging").Stdout); got != v1 {
		t.Errorf("oras resolve staging: %s, want %s", got, v1)
	}
	if h := e.ok("history", repo, "--stage", "staging").Stdout; !strings.Contains(h, "accuracy regressed in canary") || !strings.Contains(h, "rollback") {
		t.Errorf("modelreg history after the click:\n%s", h)
	}

	// A refused promotion: 1.0.0 is unsigned; the policy's words, nothing moves.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/models/team/fraud/promote?version="+v1+"&stage=production"),
		chromedp.WaitVisible(chromedp.CSS("#reason")),
	); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "promote-confirm")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#reason"), "ship it"),
		chromedp.Click(chromedp.Search(`//button[normalize-space()="Promote"]`)),
		chromedp.WaitVisible(chromedp.CSS("#result")),
	); err != nil {
		t.Fatal(err)
	}
	body = mainText(t, ctx)
	if !strings.Contains(body, "Refused") || !strings.Contains(body, "policy not satisfied") {
		t.Errorf("refused promotion: %s", body)
	}
	if r := e.exec("", nil, orasBin, "resolve", "--plain-http", repo+":production"); r.Code == 0 {
		t.Errorf("production moved after a refused promotion: %s", r.Stdout)
	}

	// On a narrow screen (a phone's 390 px) no page scrolls sideways: the
	// header wraps, tables and code scroll within themselves, the picture
	// shrinks.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/models/team/fraud", "/models/team/fraud/versions/1.0.0", "/models/team/fraud/compare?a=1.0.0&b=2.0.0"} {
		text(base + path)
		wide, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
		if err != nil || wide {
			t.Errorf("%s scrolls sideways at 390 px (%v)", path, err)
		}
		if path == "/models/team/fraud/versions/1.0.0" {
			shot(t, ctx, "version-narrow")
		}
	}
	chromedp.Do(ctx, chromedp.EmulateViewport(1200, 900))

	// A page of another site that posts a promotion form at once: the
	// browser sends no cookie (SameSite=Strict) and its Origin; nothing moves.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html><body><form id="f" method="post" action="%s/models/team/fraud/promote"><input name="stage" value="canary"><input name="version" value="%s"><input name="reason" value="x"><input name="csrf" value="%s"></form><script>document.getElementById("f").submit()</script></body></html>`,
			base, v1, strings.Repeat("0", 64))
	}))
	defer evil.Close()
	chromedp.Do(ctx, chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1))) // the form navigates away at once
	chromedp.Do(ctx, chromedp.Sleep(time.Second))
	body, _ = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if r := e.exec("", nil, orasBin, "resolve", "--plain-http", repo+":canary"); r.Code == 0 {
		t.Errorf("a cross-site form moved canary: %s (page: %s)", r.Stdout, body)
	}
}
