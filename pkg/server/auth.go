package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// authenticator enforces htpasswd basic auth on every route, the
// extension's included (distribution's own auth would not cover them).
type authenticator struct {
	users         map[string][]byte // user -> bcrypt hash
	anonymousRead bool
	next          http.Handler

	mu    sync.Mutex
	cache map[[32]byte]time.Time // sha256(user:password) -> verified until
}

// cacheFor bounds how long a verified password skips bcrypt, which costs
// tens of milliseconds per request at the usual cost factor.
const cacheFor = 5 * time.Minute

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

func (a *authenticator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if ok && a.valid(user, pass) {
		a.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
		return
	}
	if !ok && a.anonymousRead && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		a.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="modelreg"`)
	msg := "authentication required"
	if ok {
		msg = "invalid username or password"
	}
	ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", msg)
}

func (a *authenticator) valid(user, pass string) bool {
	hash, ok := a.users[user]
	if !ok {
		return false
	}
	key := sha256.Sum256([]byte(user + ":" + pass))
	now := time.Now()
	a.mu.Lock()
	until, hit := a.cache[key]
	a.mu.Unlock()
	if hit && now.Before(until) {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	a.mu.Lock()
	if len(a.cache) > 10000 {
		clear(a.cache)
	}
	a.cache[key] = now.Add(cacheFor)
	a.mu.Unlock()
	return true
}
