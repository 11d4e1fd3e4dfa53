package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// authFixture is an authenticator over alice (read-write) and reader
// (read-only), cheap bcrypt, a fake clock and a counted compare.
type authFixture struct {
	a        *authenticator
	now      time.Time
	compares atomic.Int64
}

func hash(t *testing.T, pw string, cost int) []byte {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newAuthFixture(t *testing.T, cost int) *authFixture {
	t.Helper()
	users := map[string][]byte{"alice": hash(t, "alice-pw", cost), "reader": hash(t, "reader-pw", cost)}
	if err := checkReadOnly(users, []string{"reader"}); err != nil {
		t.Fatal(err)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", User(r.Context()))
	})
	f := &authFixture{now: time.Unix(1_700_000_000, 0)}
	f.a = newAuthenticator(users, []string{"reader"}, false, next, nil)
	f.a.compare = func(h, pw []byte) error {
		f.compares.Add(1)
		return bcrypt.CompareHashAndPassword(h, pw)
	}
	f.a.throttle.now = func() time.Time { return f.now }
	return f
}

// do sends one request from ip (with basic auth unless user is "").
func (f *authFixture) do(method, ip, user, pw string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/v2/team/fraud/manifests/1.0.0", nil)
	r.RemoteAddr = ip + ":40000"
	if strings.Contains(ip, ":") {
		r.RemoteAddr = "[" + ip + "]:40000"
	}
	if user != "" {
		r.SetBasicAuth(user, pw)
	}
	w := httptest.NewRecorder()
	f.a.ServeHTTP(w, r)
	return w
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) (code, msg string) {
	t.Helper()
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 {
		t.Fatalf("status %d: not a distribution-spec error body: %q", w.Code, w.Body)
	}
	return body.Errors[0].Code, body.Errors[0].Message
}

// An unknown user costs one bcrypt comparison, against a hash of the cost
// the file's entries use, exactly like a wrong password for a known user:
// the two cannot be told apart by response time. (Asserted on the work
// done, not on a clock.)
func TestAuthUnknownUserRunsBcrypt(t *testing.T) {
	f := newAuthFixture(t, 5)
	if got, err := bcrypt.Cost(f.a.dummy); err != nil || got != 5 {
		t.Fatalf("dummy hash cost %d (%v), want 5 like the entries", got, err)
	}
	for _, c := range []struct{ user, pw string }{{"alice", "wrong"}, {"mallory", "wrong"}, {"mallory", "alice-pw"}} {
		before := f.compares.Load()
		w := f.do(http.MethodGet, "10.0.0.1", c.user, c.pw)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("%s/%s: status %d", c.user, c.pw, w.Code)
		}
		if code, msg := errorCode(t, w); code != "UNAUTHORIZED" || msg != "invalid username or password" {
			t.Errorf("%s: %s %q", c.user, code, msg)
		}
		if n := f.compares.Load() - before; n != 1 {
			t.Errorf("%s: %d bcrypt comparisons, want 1", c.user, n)
		}
	}

	// With mixed costs, unknown users are compared at the cost most
	// entries use.
	cost, _ := dummyCost(map[string][]byte{"a": hash(t, "x", 4), "b": hash(t, "y", 5), "c": hash(t, "z", 5)})
	if cost != 5 {
		t.Errorf("dummy cost for entries at 4, 5, 5: %d, want 5", cost)
	}
}

func TestAuthThrottlesFailuresPerClient(t *testing.T) {
	f := newAuthFixture(t, bcrypt.MinCost)
	th := f.a.throttle
	th.MaxFailures, th.Window, th.Penalty, th.MaxPenalty = 3, time.Minute, time.Minute, 3*time.Minute
	attacker, other := "192.0.2.7", "198.51.100.9"

	// A success does not reset the count: 2 failures, a success, 1 failure
	// reach the limit of 3.
	for i, pw := range []string{"guess1", "guess2", "alice-pw", "guess3"} {
		want := http.StatusUnauthorized
		if pw == "alice-pw" {
			want = http.StatusOK
		}
		if w := f.do(http.MethodGet, attacker, "alice", pw); w.Code != want {
			t.Fatalf("attempt %d: status %d, want %d", i, w.Code, want)
		}
	}
	before := f.compares.Load()
	w := f.do(http.MethodGet, attacker, "alice", "guess4")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "60" {
		t.Fatalf("after 3 failures: status %d, Retry-After %q; want 429, 60", w.Code, w.Header().Get("Retry-After"))
	}
	if code, msg := errorCode(t, w); code != "TOOMANYREQUESTS" || !strings.Contains(msg, attacker) {
		t.Errorf("429 body: %s %q", code, msg)
	}
	// Even the right password (even one verified before, in the cache) is
	// refused while blocked, and no bcrypt runs.
	if w := f.do(http.MethodGet, attacker, "alice", "alice-pw"); w.Code != http.StatusTooManyRequests {
		t.Errorf("right password while blocked: %d, want 429", w.Code)
	}
	if w := f.do(http.MethodGet, attacker, "mallory", "x"); w.Code != http.StatusTooManyRequests {
		t.Errorf("unknown user while blocked: %d, want 429", w.Code)
	}
	if n := f.compares.Load() - before; n != 0 {
		t.Errorf("%d bcrypt comparisons while blocked, want 0", n)
	}

	// Another address is unaffected, and its success clears nothing.
	if w := f.do(http.MethodGet, other, "alice", "nope"); w.Code != http.StatusUnauthorized {
		t.Errorf("other address, wrong password: %d", w.Code)
	}
	if w := f.do(http.MethodGet, other, "alice", "alice-pw"); w.Code != http.StatusOK {
		t.Errorf("other address, right password: %d", w.Code)
	}
	if w := f.do(http.MethodGet, attacker, "alice", "alice-pw"); w.Code != http.StatusTooManyRequests {
		t.Errorf("attacker after another address's success: %d, want 429", w.Code)
	}
	// Without credentials nothing is guessed: the usual 401 challenge.
	if w := f.do(http.MethodGet, attacker, "", ""); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("no credentials while blocked: %d", w.Code)
	}

	// The block ends; the next one lasts twice as long, up to MaxPenalty.
	f.now = f.now.Add(61 * time.Second)
	if w := f.do(http.MethodGet, attacker, "alice", "alice-pw"); w.Code != http.StatusOK {
		t.Fatalf("after the block: %d", w.Code)
	}
	for _, retry := range []string{"120", "180", "180"} {
		for i := range 3 {
			if w := f.do(http.MethodGet, attacker, "alice", fmt.Sprint("again", i)); w.Code != http.StatusUnauthorized {
				t.Fatalf("failure %d: %d", i, w.Code)
			}
		}
		w := f.do(http.MethodGet, attacker, "alice", "alice-pw")
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != retry {
			t.Fatalf("status %d, Retry-After %q; want 429, %s", w.Code, w.Header().Get("Retry-After"), retry)
		}
		f.now = f.now.Add(181 * time.Second)
	}

	// Failures older than the window do not add up.
	f.now = f.now.Add(25 * time.Hour)
	for range 5 {
		f.do(http.MethodGet, attacker, "alice", "slow guess")
		f.now = f.now.Add(40 * time.Second)
		if w := f.do(http.MethodGet, attacker, "alice", "slow guess 2"); w.Code == http.StatusTooManyRequests {
			t.Fatal("2 failures per minute were blocked with a limit of 3 per minute")
		}
		f.now = f.now.Add(40 * time.Second)
	}
}

// IPv6 clients are throttled by their /64; X-Forwarded-For is ignored.
func TestAuthClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5000":             "192.0.2.7",
		"[2001:db8:1:2:aa::1]:5000":  "2001:db8:1:2::/64",
		"[2001:db8:1:2:bb::9]:443":   "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:5000":    "192.0.2.7",
		"[fe80::1%eth0]:5000":        "fe80::/64",
		"not an address":             "not an address",
		"[2001:db8:1:3::1]:1":        "2001:db8:1:3::/64",
		"127.0.0.1:1":                "127.0.0.1",
		"[::1]:1":                    "::/64",
		"[2001:db8:ffff:ffff::]:100": "2001:db8:ffff:ffff::/64",
	} {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
	f := newAuthFixture(t, bcrypt.MinCost)
	f.a.throttle.MaxFailures = 2
	f.do(http.MethodGet, "2001:db8::1", "alice", "x")
	f.do(http.MethodGet, "2001:db8::2", "alice", "y")
	if w := f.do(http.MethodGet, "2001:db8::3", "alice", "alice-pw"); w.Code != http.StatusTooManyRequests {
		t.Errorf("third address of the same /64: %d, want 429", w.Code)
	}
	r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
	r.RemoteAddr = "[2001:db8::4]:1"
	r.Header.Set("X-Forwarded-For", "203.0.113.50")
	r.SetBasicAuth("alice", "alice-pw")
	w := httptest.NewRecorder()
	f.a.ServeHTTP(w, r)
	if w.Code != http.StatusTooManyRequests {
		t.Errorf("X-Forwarded-For changed the client: %d", w.Code)
	}
}

// Parallel guesses from one address cannot outrun the count: at most
// MaxFailures verifications run at once, the others are refused before
// any bcrypt.
func TestAuthThrottleBoundsParallelGuesses(t *testing.T) {
	f := newAuthFixture(t, bcrypt.MinCost)
	f.a.throttle.MaxFailures = 5
	release := make(chan struct{})
	f.a.compare = func(h, pw []byte) error {
		if f.compares.Add(1) <= 5 {
			<-release // the 6th and later do not wait: the test fails, not hangs
		}
		return bcrypt.CompareHashAndPassword(h, pw)
	}
	codes := make(chan int, 20)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { codes <- f.do(http.MethodGet, "192.0.2.7", "alice", fmt.Sprint("guess", i)).Code })
	}
	for range 15 {
		if c := <-codes; c != http.StatusTooManyRequests {
			t.Fatalf("a request finished with %d while 5 verifications were still running", c)
		}
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusUnauthorized {
			t.Errorf("verified wrong guess: %d, want 401", c)
		}
	}
	if n := f.compares.Load(); n != 5 {
		t.Errorf("%d bcrypt comparisons for 20 parallel guesses, want 5", n)
	}

	// Parallel logins with one right password share one verification
	// instead of each taking a slot (which would refuse all but 10 of them).
	f2 := newAuthFixture(t, bcrypt.MinCost)
	first := make(chan struct{}, 100)
	gate := make(chan struct{})
	f2.a.compare = func(h, pw []byte) error {
		first <- struct{}{}
		<-gate
		return bcrypt.CompareHashAndPassword(h, pw)
	}
	var wg2 sync.WaitGroup
	var ok atomic.Int64
	for range 30 {
		wg2.Go(func() {
			if f2.do(http.MethodGet, "192.0.2.8", "alice", "alice-pw").Code == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	<-first
	close(gate)
	wg2.Wait()
	if ok.Load() != 30 {
		t.Errorf("%d of 30 parallel logins with the right password succeeded", ok.Load())
	}
}

// The tracking map stays bounded under failures from many addresses, and
// a blocked address is not the one evicted.
func TestAuthThrottleMemoryBound(t *testing.T) {
	f := newAuthFixture(t, bcrypt.MinCost)
	th := f.a.throttle
	th.MaxFailures, th.MaxClients = 2, 50
	f.do(http.MethodGet, "192.0.2.1", "alice", "a")
	f.do(http.MethodGet, "192.0.2.1", "alice", "b")
	for i := range 500 {
		f.do(http.MethodGet, fmt.Sprintf("10.0.%d.%d", i/256, i%256), "alice", "spray")
		f.now = f.now.Add(time.Millisecond)
		if n := len(th.clients); n > th.MaxClients {
			t.Fatalf("%d clients tracked, bound %d", n, th.MaxClients)
		}
	}
	if w := f.do(http.MethodGet, "192.0.2.1", "alice", "alice-pw"); w.Code != http.StatusTooManyRequests {
		t.Errorf("the blocked address was evicted: %d", w.Code)
	}
	// Successful clients leave nothing behind.
	g := newAuthFixture(t, bcrypt.MinCost)
	g.do(http.MethodGet, "192.0.2.2", "alice", "alice-pw")
	if n := len(g.a.throttle.clients); n != 0 {
		t.Errorf("%d clients tracked after one success", n)
	}
}

func TestAuthReadOnlyUser(t *testing.T) {
	f := newAuthFixture(t, bcrypt.MinCost)
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if w := f.do(m, "192.0.2.1", "reader", "reader-pw"); w.Code != http.StatusOK {
			t.Errorf("reader %s: %d", m, w.Code)
		}
	}
	if w := f.do(http.MethodGet, "192.0.2.1", "reader", "reader-pw"); w.Body.String() != "hello reader" {
		t.Errorf("the next handler did not see the user: %q", w.Body)
	}
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPost, http.MethodPatch} {
		w := f.do(m, "192.0.2.1", "reader", "reader-pw")
		if w.Code != http.StatusForbidden {
			t.Errorf("reader %s: %d, want 403", m, w.Code)
			continue
		}
		if code, msg := errorCode(t, w); code != "DENIED" || !strings.Contains(msg, `"reader"`) || !strings.Contains(msg, "read-only") {
			t.Errorf("reader %s: %s %q", m, code, msg)
		}
		if w := f.do(m, "192.0.2.1", "alice", "alice-pw"); w.Code != http.StatusOK {
			t.Errorf("alice %s: %d", m, w.Code)
		}
	}
	// A wrong password for the read-only user is a 401 like any other.
	if w := f.do(http.MethodPut, "192.0.2.1", "reader", "nope"); w.Code != http.StatusUnauthorized {
		t.Errorf("reader, wrong password: %d", w.Code)
	}
}

func TestCheckReadOnly(t *testing.T) {
	users := map[string][]byte{"alice": nil, "bob": nil}
	if err := checkReadOnly(users, []string{"bob"}); err != nil {
		t.Error(err)
	}
	if err := checkReadOnly(users, []string{"bbo"}); err == nil || !strings.Contains(err.Error(), `"bbo"`) || !strings.Contains(err.Error(), "alice, bob") {
		t.Errorf("misspelt user: %v", err)
	}
	if err := checkReadOnly(nil, []string{"bob"}); err == nil || !strings.Contains(err.Error(), "htpasswd") {
		t.Errorf("without htpasswd: %v", err)
	}
}

// What the web UI asks before it offers a button that moves a stage: a
// writer may, a read-only user and an anonymous reader may not, and with
// no users at all anyone may.
func TestMayWrite(t *testing.T) {
	users := map[string][]byte{"alice": hash(t, "a", bcrypt.MinCost), "reader": hash(t, "r", bcrypt.MinCost)}
	var got []bool
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = append(got, MayWrite(r.Context())) })
	a := newAuthenticator(users, []string{"reader"}, true, next, nil)
	for _, u := range []struct{ user, pw string }{{"alice", "a"}, {"reader", "r"}, {"", ""}} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if u.user != "" {
			r.SetBasicAuth(u.user, u.pw)
		}
		a.ServeHTTP(httptest.NewRecorder(), r)
	}
	next.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil)) // no authenticator
	if fmt.Sprint(got) != "[true false false true]" {
		t.Errorf("MayWrite for alice, reader, anonymous, no auth: %v", got)
	}
}
