package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"
)

// authenticator enforces htpasswd basic auth on every route, the
// extension's included (distribution's own auth would not cover them).
//
// Against password guessing it does three things: an unknown user costs a
// bcrypt comparison like a known one (no user enumeration by timing), a
// client address with too many failed logins is answered 429 without any
// bcrypt (see throttle), and concurrent requests with one credential share
// one verification, so a burst of parallel guesses cannot slip past the
// throttle before the first failure is counted.
type authenticator struct {
	users         map[string][]byte // user -> bcrypt hash
	readOnly      map[string]bool   // users who may only GET and HEAD
	anonymousRead bool
	next          http.Handler
	log           *slog.Logger

	// dummy is a bcrypt hash of a random password at the cost most of the
	// file's entries use; a login as an unknown user is compared against it.
	dummy []byte
	// compare is bcrypt.CompareHashAndPassword; a field so tests can count
	// the comparisons.
	compare func(hash, password []byte) error

	throttle *throttle
	flight   singleflight.Group

	mu    sync.Mutex
	cache map[[32]byte]time.Time // sha256(user:password) -> verified until
}

// cacheFor bounds how long a verified password skips bcrypt, which costs
// tens of milliseconds per request at the usual cost factor.
const cacheFor = 5 * time.Minute

// newAuthenticator guards next with the htpasswd users. readOnly users
// must be among them (checkReadOnly, at start-up).
func newAuthenticator(users map[string][]byte, readOnly []string, anonymousRead bool, next http.Handler, log *slog.Logger) *authenticator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &authenticator{
		users: users, readOnly: map[string]bool{}, anonymousRead: anonymousRead, next: next, log: log,
		compare: bcrypt.CompareHashAndPassword, throttle: newThrottle(), cache: map[[32]byte]time.Time{},
	}
	for _, u := range readOnly {
		a.readOnly[u] = true
	}
	cost, costs := dummyCost(users)
	if len(costs) > 1 {
		log.Warn("htpasswd entries use different bcrypt costs: users whose cost differs can be told from unknown users by response time; rehash them with `htpasswd -B -C N`",
			"costs", costs, "unknown_users_compared_at", cost)
	}
	a.dummy = dummyHash(cost, users)
	return a
}

// dummyCost is the bcrypt cost of an unknown user's comparison: the cost
// most entries use (the higher one on a tie), so those entries cannot be
// told from unknown users. costs counts the entries per cost.
func dummyCost(users map[string][]byte) (int, map[int]int) {
	costs := map[int]int{}
	for _, h := range users {
		if c, err := bcrypt.Cost(h); err == nil {
			costs[c]++
		}
	}
	best := bcrypt.DefaultCost
	for _, c := range slices.Sorted(maps.Keys(costs)) {
		if costs[c] >= costs[best] {
			best = c
		}
	}
	return best, costs
}

// dummyHash hashes 32 random bytes nobody knows at cost.
func dummyHash(cost int, users map[string][]byte) []byte {
	pw := make([]byte, 32)
	rand.Read(pw)
	h, err := bcrypt.GenerateFromPassword([]byte(hex.EncodeToString(pw)[:32]), cost)
	if err == nil {
		return h
	}
	// Cannot happen for a cost read from a valid hash; any entry of that
	// cost then serves (its result is ignored for unknown users).
	for _, h := range users {
		if c, _ := bcrypt.Cost(h); c == cost {
			return h
		}
	}
	return nil
}

// checkReadOnly verifies at start-up that every read-only user is an
// htpasswd user: a misspelt name would otherwise leave that account with
// full write access.
func checkReadOnly(users map[string][]byte, readOnly []string) error {
	if len(readOnly) == 0 {
		return nil
	}
	if users == nil {
		return errors.New("read-only users need an htpasswd file: without one there are no users")
	}
	for _, u := range readOnly {
		if _, ok := users[u]; !ok {
			return fmt.Errorf("read-only user %q is not in the htpasswd file (users: %s)", u, strings.Join(slices.Sorted(maps.Keys(users)), ", "))
		}
	}
	return nil
}

// checkAdmins verifies at start-up that every admin is an htpasswd user
// who may write; without an htpasswd file there are no users, and the
// local operator is admin.
func checkAdmins(users map[string][]byte, admins, readOnly []string) error {
	if len(admins) == 0 {
		return nil
	}
	if users == nil {
		return errors.New("admin users need an htpasswd file: without one every request is the local operator's, who is admin already")
	}
	for _, u := range admins {
		if _, ok := users[u]; !ok {
			return fmt.Errorf("admin user %q is not in the htpasswd file (users: %s)", u, strings.Join(slices.Sorted(maps.Keys(users)), ", "))
		}
		if slices.Contains(readOnly, u) {
			return fmt.Errorf("user %q is both admin and read-only: choose one", u)
		}
	}
	return nil
}

// adminCheck reports whether a request's user is an admin: any request
// when there is no htpasswd file (the local operator), else a user named
// with --admin-user.
func adminCheck(users map[string][]byte, admins []string) func(*http.Request) bool {
	if users == nil {
		return func(*http.Request) bool { return true }
	}
	return func(r *http.Request) bool {
		u := User(r.Context())
		return u != "" && slices.Contains(admins, u)
	}
}

func loadHtpasswd(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w; create one with `htpasswd -Bc FILE USER`", err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("htpasswd %s line %d: expected USER:HASH", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("htpasswd %s line %d: user %q: only bcrypt hashes are accepted (htpasswd -B)", path, n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("htpasswd %s has no users", path)
	}
	return users, nil
}

type userKey struct{}

// User is the authenticated user of a request, "" when anonymous.
func User(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// mayWriteKey marks a request that passed the authenticator with whether
// its user may write (neither anonymous nor read-only). A request with no
// mark met no authenticator: the server has no users, and anyone writes.
type mayWriteKey struct{}

// MayWrite says whether the request's user may write: what the web UI
// asks before it offers a button that moves a stage.
func MayWrite(ctx context.Context) bool {
	v, ok := ctx.Value(mayWriteKey{}).(bool)
	return !ok || v
}

func isRead(method string) bool { return method == http.MethodGet || method == http.MethodHead }

func (a *authenticator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		if a.anonymousRead && isRead(r.Method) {
			a.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), mayWriteKey{}, false)))
			return
		}
		a.challenge(w, "authentication required")
		return
	}
	client := clientKey(r.RemoteAddr)
	if wait := a.throttle.blocked(client); wait > 0 {
		tooMany(w, client, wait)
		return
	}
	switch res := a.verify(client, user, pass); {
	case res.wait > 0:
		tooMany(w, client, res.wait)
		return
	case !res.ok:
		a.challenge(w, "invalid username or password")
		return
	}
	if a.readOnly[user] && !isRead(r.Method) {
		serveError(w, errDenied, fmt.Sprintf("user %q has a read-only account: it may pull (GET, HEAD) but not %s %s", user, r.Method, r.URL.Path))
		return
	}
	ctx := context.WithValue(r.Context(), userKey{}, user)
	a.next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, mayWriteKey{}, !a.readOnly[user])))
}

func (a *authenticator) challenge(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="modelreg"`)
	serveError(w, errUnauthorized, msg)
}

// tooMany answers 429 with Retry-After in whole seconds, rounded up.
func tooMany(w http.ResponseWriter, client string, wait time.Duration) {
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	serveError(w, errTooMany,
		fmt.Sprintf("too many failed logins from %s; retry in %d s", client, secs))
}

// verification is the outcome of checking one credential.
type verification struct {
	ok   bool
	wait time.Duration // > 0: refused by the throttle, nothing was checked
}

// verify checks user:pass. A credential verified in the last cacheFor is
// accepted without bcrypt; otherwise one bcrypt comparison runs per
// distinct credential at a time (concurrent requests with it wait for it
// and share its result), and only after the throttle granted client one of
// its remaining attempts.
func (a *authenticator) verify(client, user, pass string) verification {
	key := sha256.Sum256([]byte(user + ":" + pass))
	now := time.Now()
	a.mu.Lock()
	until, hit := a.cache[key]
	a.mu.Unlock()
	if hit && now.Before(until) {
		return verification{ok: true}
	}
	v, _, _ := a.flight.Do(string(key[:]), func() (any, error) {
		if wait := a.throttle.reserve(client); wait > 0 {
			return verification{wait: wait}, nil
		}
		ok := a.check(user, pass)
		if d := a.throttle.done(client, !ok); d > 0 {
			a.log.Warn("too many failed logins; client blocked", "client", client, "user", user, "blocked_for", d.String())
		}
		if ok {
			a.mu.Lock()
			if len(a.cache) > 10000 {
				clear(a.cache)
			}
			a.cache[key] = time.Now().Add(cacheFor)
			a.mu.Unlock()
		}
		return verification{ok: ok}, nil
	})
	return v.(verification)
}

// check runs exactly one bcrypt comparison, against the dummy hash for an
// unknown user, so both answers take as long.
func (a *authenticator) check(user, pass string) bool {
	hash, known := a.users[user]
	if !known {
		a.compare(a.dummy, []byte(pass))
		return false
	}
	return a.compare(hash, []byte(pass)) == nil
}

// clientKey is the throttling key of a request: its peer IP address
// (X-Forwarded-For is not trusted, any client can set it), IPv6 addresses
// by their /64, which one host usually holds whole.
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.String()
	}
	return ip.String()
}

// Defaults of the login throttle; see docs/server.md.
const (
	defaultMaxFailures = 10
	defaultWindow      = 10 * time.Minute
	defaultPenalty     = time.Minute
	defaultMaxPenalty  = time.Hour
	defaultForget      = 24 * time.Hour
	defaultMaxClients  = 10000
)

// throttle counts failed logins per client address. MaxFailures failures
// within Window block the address for Penalty, doubled each further time
// it reaches the limit (up to MaxPenalty); the doubling is forgotten after
// Forget without a failure. A success does not clear anything, so an
// attacker cannot interleave logins to an account of their own to reset
// the count. At most MaxClients addresses are tracked: when full, idle
// entries go first, then those whose last failure is oldest.
type throttle struct {
	MaxFailures int
	Window      time.Duration
	Penalty     time.Duration
	MaxPenalty  time.Duration
	Forget      time.Duration
	MaxClients  int
	now         func() time.Time

	mu      sync.Mutex
	clients map[string]*clientState
}

type clientState struct {
	failures     int       // in the window starting at windowStart
	windowStart  time.Time //
	inflight     int       // verifications running now
	strikes      int       // times the limit was reached
	blockedUntil time.Time
	last         time.Time // last failure
}

func newThrottle() *throttle {
	return &throttle{
		MaxFailures: defaultMaxFailures, Window: defaultWindow, Penalty: defaultPenalty, MaxPenalty: defaultMaxPenalty,
		Forget: defaultForget, MaxClients: defaultMaxClients, now: time.Now, clients: map[string]*clientState{},
	}
}

// blocked is how long client must still wait, 0 when it may try.
func (t *throttle) blocked(client string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.clients[client]
	if c == nil {
		return 0
	}
	return max(0, c.blockedUntil.Sub(t.now()))
}

// reserve grants client one verification, or says how long to wait: a
// client may have at most MaxFailures minus its failures in the window
// verifications running at once, so parallel guesses are bounded too.
func (t *throttle) reserve(client string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	c := t.get(client, now)
	if d := c.blockedUntil.Sub(now); d > 0 {
		return d
	}
	if now.Sub(c.windowStart) >= t.Window {
		c.failures, c.windowStart = 0, now
	}
	if c.failures+c.inflight >= t.MaxFailures {
		return time.Second
	}
	c.inflight++
	return 0
}

// done ends a verification reserve granted, counting it when it failed;
// it returns the block it started, if this failure reached the limit.
// Requests that shared the verification are not counted again: they
// guessed nothing new.
func (t *throttle) done(client string, failed bool) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	c := t.get(client, now)
	c.inflight = max(0, c.inflight-1)
	if !failed {
		if c.inflight == 0 && c.failures == 0 && c.strikes == 0 {
			delete(t.clients, client)
		}
		return 0
	}
	if now.Sub(c.windowStart) >= t.Window {
		c.failures, c.windowStart = 0, now
	}
	if c.strikes > 0 && now.Sub(c.last) >= t.Forget {
		c.strikes = 0
	}
	c.failures++
	c.last = now
	if c.failures < t.MaxFailures {
		return 0
	}
	c.strikes++
	d := t.MaxPenalty
	if c.strikes <= 30 {
		d = min(t.Penalty<<(c.strikes-1), t.MaxPenalty)
	}
	c.blockedUntil = now.Add(d)
	c.failures, c.windowStart = 0, now
	return d
}

// get returns client's entry, making room for a new one when the map is
// full.
func (t *throttle) get(client string, now time.Time) *clientState {
	if c := t.clients[client]; c != nil {
		return c
	}
	if len(t.clients) >= t.MaxClients {
		t.evict(now)
	}
	c := &clientState{windowStart: now}
	t.clients[client] = c
	return c
}

// evict drops every entry that no longer matters (not blocked, nothing
// running, no failure within Forget); if none does, the unblocked entry
// with the oldest failure, else the oldest entry at all.
func (t *throttle) evict(now time.Time) {
	var oldest, oldestBlocked string
	for k, c := range t.clients {
		if c.inflight > 0 {
			continue
		}
		blocked := now.Before(c.blockedUntil)
		if !blocked && now.Sub(c.last) >= t.Forget {
			delete(t.clients, k)
			continue
		}
		switch {
		case !blocked && (oldest == "" || c.last.Before(t.clients[oldest].last)):
			oldest = k
		case blocked && (oldestBlocked == "" || c.last.Before(t.clients[oldestBlocked].last)):
			oldestBlocked = k
		}
	}
	if len(t.clients) < t.MaxClients {
		return
	}
	if oldest == "" {
		oldest = oldestBlocked
	}
	delete(t.clients, oldest)
}
