package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/pkg/event"
	"github.com/modelreg/modelreg/pkg/wire"
)

// receiver is a real HTTP receiver of modelreg's events: it checks every
// delivery's HMAC, timestamp and CloudEvents fields as a user's receiver
// would, and keeps what it received.
type receiver struct {
	t      *testing.T
	secret []byte
	url    string
	// down makes it answer 503, as a receiver being deployed does.
	down   atomic.Bool
	mu     sync.Mutex
	events []*event.CloudEvent // every accepted delivery, duplicates included
	bad    []string
}

func startReceiver(t *testing.T, secret string) *receiver {
	t.Helper()
	rc := &receiver{t: t, secret: []byte(secret)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	rc.url = "http://" + ln.Addr().String() + "/hook"
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if rc.down.Load() {
		http.Error(w, "deploying", http.StatusServiceUnavailable)
		return
	}
	fail := func(msg string) {
		rc.mu.Lock()
		rc.bad = append(rc.bad, msg)
		rc.mu.Unlock()
		http.Error(w, msg, http.StatusBadRequest)
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != event.ContentType {
		fail(fmt.Sprintf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type")))
		return
	}
	if err := event.Verify(rc.secret, r.Header.Get(event.SignatureHeader), body, time.Now(), event.DefaultTolerance); err != nil {
		fail("signature: " + err.Error())
		return
	}
	e, err := event.Decode(body)
	if err != nil {
		fail(err.Error())
		return
	}
	if e.DataContentType != "application/json" || e.Time.IsZero() || !strings.HasPrefix(e.Source, "/modelreg/") || e.Subject == "" || e.Data.Repository == "" {
		fail(fmt.Sprintf("incomplete CloudEvent: %s", body))
		return
	}
	rc.mu.Lock()
	rc.events = append(rc.events, e)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// received returns the distinct events received, by id, in arrival order.
func (rc *receiver) received() (byID map[string]*event.CloudEvent, order []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	byID = map[string]*event.CloudEvent{}
	for _, e := range rc.events {
		if byID[e.ID] == nil {
			order = append(order, e.ID)
		}
		byID[e.ID] = e
	}
	return byID, order
}

func (rc *receiver) problems() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.bad)
}

// waitFor waits until the receiver holds every id in ids.
func (rc *receiver) waitFor(ids []string) map[string]*event.CloudEvent {
	rc.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, _ := rc.received()
		missing := 0
		for _, id := range ids {
			if got[id] == nil {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			rc.t.Fatalf("%d of %d events never arrived (received %d; problems: %v)", missing, len(ids), len(got), rc.problems())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func eventLog(t *testing.T, addr, query string) []wire.Event {
	t.Helper()
	var out []wire.Event
	after := int64(0)
	for {
		var page wire.Events
		apiGet(t, addr, fmt.Sprintf("events?n=1000&after=%d%s", after, query), &page)
		out = append(out, page.Events...)
		if page.Next == 0 {
			return out
		}
		after = page.Next
	}
}

func ids(evs []wire.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func types(evs []wire.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, strings.TrimPrefix(e.Type, "dev.modelreg."))
	}
	return out
}

// Events: every change a team reacts to is delivered as a signed
// CloudEvent, filtered per subscription; a receiver that is down gets
// them once it is back, even when the server was killed (kill -9) in
// between; a dead receiver's deliveries end dead in the delivery log and
// can be retried; a rebuild of the index sends nothing old.
func TestEvents(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
	all := startReceiver(t, "all-events-secret-0123456789")
	deploy := startReceiver(t, "deploy-secret-0123456789abcdef")
	// A receiver that always fails: its deliveries must end dead.
	broken := startReceiver(t, "broken-secret-0123456789abcdef")
	broken.down.Store(true)
	writeFile(t, filepath.Join(e.dir, "deploy.secret"), "deploy-secret-0123456789abcdef\n", 0o600)
	cfg := filepath.Join(e.dir, "modelreg.yaml")
	writeFile(t, cfg, fmt.Sprintf(`events:
  subscriptions:
    - name: all
      url: %s
      secretEnv: EVENTS_SECRET
      backoff: 100ms
      maxAttempts: 1000
    - name: deploy
      url: %s
      secretFile: %s
      types: [stage.moved]
      repositories: ["team/*"]
      backoff: 100ms
    - name: broken
      url: %s
      secret: broken-secret-0123456789abcdef
      backoff: 50ms
      maxAttempts: 3
    - name: unreachable
      url: http://%s/hooks/T0KEN-in-the-url
      secret: unreachable-secret-0123456789
      types: [version.deleted]
      maxAttempts: 1
`, all.url, deploy.url, filepath.Join(e.dir, "deploy.secret"), broken.url, closedPort(t)), 0o644)
	os.Setenv("EVENTS_SECRET", "all-events-secret-0123456789")
	t.Cleanup(func() { os.Unsetenv("EVENTS_SECRET") })

	data := t.TempDir()
	args := []string{"--policy", filepath.Join(e.dir, "policy.yaml"), "--config", cfg}
	p := startServeAt(t, data, "127.0.0.1:0", args...)
	addr := p.reg.Addr
	repo := addr + "/team/fraud"

	v1 := pushVersion(t, e, repo+":1.0.0", "weights one")
	e.ok("sign", repo+":1.0.0", "--key", "alice.key")
	e.ok("eval", "add", repo+":1.0.0", "--metric", "auc=0.91")
	e.ok("lineage", "add", repo+":1.0.0", "--dataset", "s3://data/train.parquet")
	e.ok("promote", repo+":1.0.0", "--to", "staging", "--reason", "nightly")
	v2 := pushVersion(t, e, repo+":2.0.0", "weights two")
	// Refused by the server's gate, whatever the client: here the oras CLI.
	if r := e.exec("", nil, orasBin, "tag", "--plain-http", repo+":2.0.0", "production"); r.Code == 0 {
		t.Fatal("oras tag of an unsigned version to production was allowed")
	}
	e.ok("sign", repo+":2.0.0", "--key", "alice.key")
	e.ok("promote", repo+":2.0.0", "--to", "staging")
	e.ok("rollback", repo, "--stage", "staging", "--reason", "2.0 regressed")
	pushVersion(t, e, repo+":0.9.0", "weights old")
	e.ok("delete", repo+":0.9.0", "--reason", "trained on the wrong split")
	pushVersion(t, e, addr+"/other/deep/m:1.0.0", "elsewhere")

	log := eventLog(t, addr, "")
	// modelreg sign signs the version and its image view: two signatures.
	want := []string{"version.pushed", "signature.attached", "signature.attached", "evaluation.attached", "lineage.attached", "stage.moved",
		"version.pushed", "promotion.refused", "signature.attached", "signature.attached", "stage.moved", "stage.moved",
		"version.pushed", "version.deleted", "version.pushed"}
	if got := types(log); !slices.Equal(got, want) {
		t.Fatalf("event log types:\n got  %v\n want %v", got, want)
	}
	got := all.waitFor(ids(log))
	pick := func(i int) wire.EventData { return got[log[i].ID].Data }
	if d := pick(0); d.Digest != v1 || d.Tag != "1.0.0" || d.Repository != "team/fraud" {
		t.Errorf("version.pushed: %+v", d)
	}
	if d := pick(1); d.Subject != v1 {
		t.Errorf("signature.attached names subject %q, want %s", d.Subject, v1)
	}
	if d := pick(5); d.Stage != "staging" || d.Kind != "promotion" || d.Digest != v1 || d.Previous != "" || d.Reason != "nightly" || d.Record == "" || d.Seq != 1 || d.Actor == "" {
		t.Errorf("stage.moved (promotion): %+v", d)
	}
	if d := pick(7); d.Stage != "production" || d.Digest != v2 || !strings.Contains(d.Reason, "signatures") {
		t.Errorf("promotion.refused: %+v", d)
	}
	if d := pick(11); d.Kind != "rollback" || d.Digest != v1 || d.Previous != v2 || d.Reason != "2.0 regressed" {
		t.Errorf("stage.moved (rollback): %+v", d)
	}
	if d := pick(13); len(d.Tags) != 1 || d.Tags[0] != "0.9.0" || d.Reason != "trained on the wrong split" || d.Record == "" {
		t.Errorf("version.deleted: %+v", d)
	}
	for i, ev := range log {
		if c := got[ev.ID]; c.Type != ev.Type || c.Subject != ev.Subject || !c.Time.Equal(ev.Time) {
			t.Errorf("event %d: delivered %s %s %s, logged %s %s %s", i, c.Type, c.Subject, c.Time, ev.Type, ev.Subject, ev.Time)
		}
	}
	// The deploy subscription: stage moves of team/* only (not other/deep/m).
	moves := eventLog(t, addr, "&type=stage.moved")
	if len(moves) != 3 {
		t.Fatalf("%d stage.moved events in the log, want 3", len(moves))
	}
	dgot := deploy.waitFor(ids(moves))
	if len(dgot) != 3 {
		t.Errorf("the deploy subscription received %d distinct events, want exactly the 3 stage moves", len(dgot))
	}

	// The broken receiver: every delivery dead after 3 attempts, listed.
	var dead wire.Deliveries
	deadline := time.Now().Add(30 * time.Second)
	for {
		apiGet(t, addr, "events/deliveries?subscription=broken&state=dead&n=1000", &dead)
		if len(dead.Deliveries) == len(log) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(dead.Deliveries) != len(log) {
		t.Fatalf("%d dead deliveries to the broken receiver, want %d", len(dead.Deliveries), len(log))
	}
	if d := dead.Deliveries[0]; d.Attempts != 3 || d.LastStatus != http.StatusServiceUnavailable || !strings.Contains(d.LastError, "503") {
		t.Errorf("a dead delivery: %+v", d)
	}
	// A receiver that cannot be reached: dead at once (maxAttempts 1),
	// and its URL (a secret, for some webhooks) is in no answer.
	var unreachable wire.Deliveries
	for deadline := time.Now().Add(30 * time.Second); len(unreachable.Deliveries) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		apiGet(t, addr, "events/deliveries?subscription=unreachable&state=dead", &unreachable)
	}
	if len(unreachable.Deliveries) != 1 || unreachable.Deliveries[0].LastError == "" || strings.Contains(unreachable.Deliveries[0].LastError, "T0KEN") {
		t.Errorf("the unreachable subscription's deliveries: %+v", unreachable.Deliveries)
	}
	// The web UI's event log shows the same, newest first.
	resp0, err := http.Get("http://" + addr + "/ui/events?repository=team/fraud&type=stage.moved")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp0.Body)
	resp0.Body.Close()
	for _, want := range []string{"rollback", "2.0 regressed", "broken: dead after 3 attempts (503)", "deploy: delivered", "all: delivered"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("/ui/events lacks %q", want)
		}
	}
	if strings.Contains(string(page), "version.pushed</span>") || strings.Index(string(page), "rollback") > strings.Index(string(page), "nightly") {
		t.Errorf("/ui/events?type=stage.moved is not the stage moves, newest first:\n%s", page)
	}
	// Retried by an operator once the receiver is fixed.
	broken.down.Store(false)
	retry := dead.Deliveries[0]
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://%s/v2/_modelreg/v1/events/deliveries/%d/retry", addr, retry.ID), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("retry: %v %v", err, resp)
	}
	var retried *wire.Event
	for _, ev := range log {
		if ev.Seq == retry.Event {
			retried = &ev
		}
	}
	broken.waitFor([]string{retried.ID})

	// kill -9 between commit and delivery: the receiver is down while
	// changes commit; the server dies; after a restart the receiver gets
	// exactly the committed events (at least once each, de-duplicated by id).
	all.down.Store(true)
	before := len(log)
	pushVersion(t, e, repo+":3.0.0", "weights three")
	e.ok("sign", repo+":3.0.0", "--key", "alice.key")
	e.ok("promote", repo+":3.0.0", "--to", "staging")
	log = eventLog(t, addr, "")
	pending := log[before:]
	if got := types(pending); !slices.Equal(got, []string{"version.pushed", "signature.attached", "signature.attached", "stage.moved"}) {
		t.Fatalf("events of the changes before the kill: %v", got)
	}
	// Wait until the server has tried (and failed) to deliver them.
	for deadline := time.Now().Add(30 * time.Second); ; {
		ev := eventLog(t, addr, fmt.Sprintf("&after=%d", pending[len(pending)-2].Seq))[1]
		if len(ev.Deliveries) > 0 && ev.Deliveries[0].Attempts > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.kill()
	all.down.Store(false)
	p = startServeAt(t, data, addr, args...)
	got = all.waitFor(ids(pending))
	after := eventLog(t, addr, "")
	if len(after) != len(log) {
		t.Errorf("the restart added events: %v", types(after[len(log):]))
	}
	if d := got[pending[3].ID].Data; d.Stage != "staging" || d.Previous != v1 {
		t.Errorf("stage.moved after the restart: %+v", d)
	}
	// A full rebuild of the index sends nothing old, and keeps the log.
	p.stop()
	p = startServeAt(t, data, addr, append(args, "--reindex")...)
	_ = p
	if n := len(eventLog(t, addr, "")); n != len(log) {
		t.Errorf("after --reindex the log holds %d events, before %d", n, len(log))
	}
	if pr := all.problems(); len(pr) > 0 {
		t.Errorf("the receiver refused deliveries: %v", pr)
	}
	t.Logf("%d events, %d delivered to 'all' (%d deliveries counting repeats); %d stage moves to 'deploy'", len(log), len(got), len(all.events), len(dgot))
}

// examples/deploy-on-promotion, built and run as a user would: it deploys
// when production moves (not staging), a failing deploy is retried by
// the registry, and a redelivery never deploys twice.
func TestDeployOnPromotionExample(t *testing.T) {
	e := newEnv(t)
	signers(t, e)
	writeFile(t, filepath.Join(e.dir, "policy.yaml"), policyYAML, 0o644)
	bin := filepath.Join(e.dir, "deploy-on-promotion")
	build := exec.Command("go", "build", "-o", bin, "./examples/deploy-on-promotion")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	secret := filepath.Join(e.dir, "deploy.secret")
	writeFile(t, secret, "0123456789abcdef0123456789abcdef\n", 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := ln.Addr().String()
	ln.Close()
	deployed := filepath.Join(e.dir, "deployed.txt")
	ready := filepath.Join(e.dir, "cluster-ready")
	// The deploy fails until the "cluster" is ready.
	cmd := exec.Command(bin, "--listen", hook, "--secret-file", secret, "--state", filepath.Join(e.dir, "handled"),
		"--command", fmt.Sprintf(`test -e %s && echo "$MODELREG_STAGE $MODELREG_DIGEST $MODELREG_KIND $MODELREG_PREVIOUS" >> %s`, ready, deployed))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var logs lockedBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	cfg := filepath.Join(e.dir, "modelreg.yaml")
	writeFile(t, cfg, fmt.Sprintf("events:\n  subscriptions:\n    - name: deploy\n      url: http://%s/hook\n      types: [stage.moved]\n      secretFile: %s\n      backoff: 200ms\n", hook, secret), 0o644)
	reg := startServer(t, "--policy", filepath.Join(e.dir, "policy.yaml"), "--config", cfg)
	repo := reg.Addr + "/team/fraud"
	v1 := pushVersion(t, e, repo+":1.0.0", "one")
	v2 := pushVersion(t, e, repo+":2.0.0", "two")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		e.ok("sign", repo+":"+v, "--key", "alice.key")
		e.ok("sign", repo+":"+v, "--key", "bob.key")
	}
	e.ok("promote", repo+":1.0.0", "--to", "staging")
	e.ok("promote", repo+":1.0.0", "--to", "production")
	// Failing deploys are retried by the registry.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), "the deploy command failed"); {
		if time.Now().After(deadline) {
			t.Fatalf("no failing deploy attempt; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	writeFile(t, ready, "", 0o644)
	e.ok("promote", repo+":2.0.0", "--to", "production")
	e.ok("rollback", repo, "--stage", "production")
	want := fmt.Sprintf("production %s promotion \nproduction %s promotion %s\nproduction %s rollback %s\n", v1, v2, v1, v1, v2)
	for deadline := time.Now().Add(60 * time.Second); ; {
		b, _ := os.ReadFile(deployed)
		if string(b) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployed:\n%s\nwant:\n%s\nreceiver logs:\n%s", b, want, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// An operator's redelivery of a handled event deploys nothing again.
	var ds wire.Deliveries
	apiGet(t, reg.Addr, "events/deliveries?subscription=deploy&state=delivered", &ds)
	for _, d := range ds.Deliveries {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://%s/v2/_modelreg/v1/events/deliveries/%d/retry", reg.Addr, d.ID), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("retry: %v %v", err, resp)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); strings.Count(logs.String(), "a redelivery of a handled event") < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the redeliveries did not arrive; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b, _ := os.ReadFile(deployed); string(b) != want {
		t.Errorf("a redelivery deployed again:\n%s", b)
	}
}
