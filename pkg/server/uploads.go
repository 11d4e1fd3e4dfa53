package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/modelreg/modelreg/pkg/transfer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Uploads in parts (docs/api.md): the OCI chunked upload takes a blob's
// bytes in order over one connection, and a link that caps each
// connection caps the upload. Here a client sends parts of one blob at
// once, over several connections, in any order. The server writes each
// part in place in a scratch file and, as the parts that follow the ones
// already taken arrive, feeds them in order into an ordinary blob writer
// of distribution (which hashes as it writes), so completing the upload
// costs only the tail still in flight and the digest check. The scratch
// file is a second write of the blob: a client uses parts only when one
// connection is its limit.
const (
	// defaultPartSize is the part size when the client names none.
	defaultPartSize = 32 << 20
	minPartSize     = 1 << 20
	maxPartSize     = 1 << 30
	// maxParts bounds the state of one upload, as S3 does.
	maxParts = 10000
	// maxUploads bounds the uploads in parts held at once.
	maxUploads = 1024
	// uploadMaxAge is how long an untouched upload is kept: distribution's
	// own default for purging uploads.
	uploadMaxAge = 7 * 24 * time.Hour
)

var (
	errUploadUnknown = v2.ErrorCodeBlobUploadUnknown
	errRangeInvalid  = v2.ErrorCodeRangeInvalid
	uploadIDRE       = `[0-9a-f]{32}`
	uploadsRE        = regexp.MustCompile(`^/v2/` + strings.Replace(regexp.QuoteMeta(transfer.PartsEndpoint), `\{name\}`, `(`+nameRE+`)`, 1) + `(?:/(` + uploadIDRE + `)(?:/parts/([0-9]{1,5}))?)?$`)
)

// uploads holds the uploads in parts under dir, one directory each (a
// state file and the scratch data file), and the ones in use in memory.
type uploads struct {
	dir string
	st  *store
	log *slog.Logger
	// off, when set, says why the extension is off (replicas share the
	// storage): its routes answer with it and discovery omits them.
	off string

	mu   sync.Mutex
	open map[string]*upload
}

// upload is one upload in parts. Parts are written concurrently (each by
// one request at a time); held and the feeder's position are guarded by mu.
type upload struct {
	dir     string
	state   uploadState
	data    *os.File
	writing []bool
	mu      sync.Mutex
	wake    chan struct{} // a part became complete
	quit    chan struct{} // the upload is cancelled
	fed     int           // parts written to bw, in order
	fedAll  chan struct{} // closed when every part is in bw
	feedErr error
	bw      distribution.BlobWriter
	done    bool // a completion is under way
	gone    sync.Once
}

// uploadState is what survives a restart of the server: the upload's
// shape and the bytes held of each part.
type uploadState struct {
	Repository string    `json:"repository"`
	Size       int64     `json:"size"`
	PartSize   int64     `json:"partSize"`
	Held       []int64   `json:"held"`
	Created    time.Time `json:"created"`
}

func (s uploadState) parts() int { return int((s.Size + s.PartSize - 1) / s.PartSize) }

// partLen is the size of part n: PartSize, or the rest for the last.
func (s uploadState) partLen(n int) int64 { return min(s.PartSize, s.Size-int64(n)*s.PartSize) }

func newUploads(dir string, st *store, log *slog.Logger) *uploads {
	u := &uploads{dir: dir, st: st, log: log, open: map[string]*upload{}}
	u.purge()
	return u
}

// serve answers the uploads routes; it returns false for any other path.
func (us *uploads) serve(w http.ResponseWriter, r *http.Request) bool {
	m := uploadsRE.FindStringSubmatch(r.URL.Path)
	if m == nil {
		return false
	}
	name, id, part := m[1], m[2], m[3]
	if !validName(w, name) {
		return true
	}
	if us.off != "" {
		serveError(w, errUnsupported, us.off)
		return true
	}
	switch {
	case id == "" && r.Method == http.MethodPost:
		us.create(w, r, name)
	case id != "" && part == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		if u := us.get(w, name, id); u != nil {
			u.mu.Lock()
			st := u.wire(id)
			u.mu.Unlock()
			writeJSON(w, st)
		}
	case id != "" && part == "" && r.Method == http.MethodPut:
		if u := us.get(w, name, id); u != nil {
			us.complete(w, r, name, id, u)
		}
	case id != "" && part == "" && r.Method == http.MethodDelete:
		if u := us.get(w, name, id); u != nil {
			us.remove(id, u)
			w.WriteHeader(http.StatusNoContent)
		}
	case part != "" && r.Method == http.MethodPut:
		if u := us.get(w, name, id); u != nil {
			n, _ := strconv.Atoi(part)
			us.putPart(w, r, u, n)
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, DELETE (an upload), POST (uploads), PUT (a part)")
		serveError(w, errUnsupported, fmt.Sprintf("%s is not an uploads route; see docs/api.md", r.Method))
	}
	return true
}

func (u *upload) wire(id string) transfer.PartsUpload {
	return transfer.PartsUpload{ID: id, Size: u.state.Size, PartSize: u.state.PartSize, Parts: u.state.parts(), Held: append([]int64(nil), u.state.Held...)}
}

// create opens an upload of the size the client declares.
func (us *uploads) create(w http.ResponseWriter, r *http.Request, name string) {
	var req transfer.PartsRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		serveError(w, errPartsInvalid, `the body must be JSON: {"size": BYTES, "partSize": BYTES}: `+err.Error())
		return
	}
	if req.PartSize == 0 {
		req.PartSize = defaultPartSize
	}
	switch {
	case req.Size <= 0:
		serveError(w, errSizeInvalid, "size must be the blob's size in bytes, more than 0")
		return
	case req.PartSize < minPartSize || req.PartSize > maxPartSize:
		serveError(w, errSizeInvalid, fmt.Sprintf("partSize %d: must be between %d and %d bytes", req.PartSize, minPartSize, maxPartSize))
		return
	case (req.Size+req.PartSize-1)/req.PartSize > maxParts:
		serveError(w, errSizeInvalid, fmt.Sprintf("%d bytes in parts of %d make more than %d parts: use larger parts", req.Size, req.PartSize, maxParts))
		return
	}
	us.purge()
	if n := us.count(); n >= maxUploads {
		serveError(w, errTooMany, fmt.Sprintf("%d uploads in parts are open: finish or cancel some (DELETE), or wait for those untouched for %s to be purged", n, uploadMaxAge))
		return
	}
	id := newUploadID()
	st := uploadState{Repository: name, Size: req.Size, PartSize: req.PartSize, Created: time.Now().UTC()}
	st.Held = make([]int64, st.parts())
	dir := filepath.Join(us.dir, id)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		us.fail(w, "creating the upload", err)
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err == nil {
		err = f.Truncate(req.Size) // sparse: no space is taken before the parts arrive
	}
	if err == nil {
		err = saveUploadState(dir, st)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(dir)
		us.fail(w, "creating the upload", err)
		return
	}
	u, err := us.start(dir, st, f)
	if err != nil {
		os.RemoveAll(dir)
		us.fail(w, "creating the upload", err)
		return
	}
	us.mu.Lock()
	us.open[id] = u
	us.mu.Unlock()
	w.Header().Set("Location", "/v2/"+strings.Replace(transfer.PartsEndpoint, "{name}", name, 1)+"/"+id)
	w.Header().Set("Content-Type", "application/json")
	writeJSONAs(w, http.StatusCreated, "application/json", u.wire(id))
}

// start opens the blob writer the parts are fed into and starts the feeder.
func (us *uploads) start(dir string, st uploadState, f *os.File) (*upload, error) {
	repo, err := us.st.repo(context.Background(), st.Repository)
	if err != nil {
		return nil, err
	}
	// The writer outlives the request that opened the upload.
	bw, err := repo.Blobs(context.Background()).Create(context.Background())
	if err != nil {
		return nil, err
	}
	u := &upload{dir: dir, state: st, data: f, writing: make([]bool, st.parts()), bw: bw,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), fedAll: make(chan struct{})}
	go u.feed()
	u.nudge()
	return u, nil
}

// get returns the upload id of repository name, loading it from disk after
// a restart; it answers 404 itself when there is none.
func (us *uploads) get(w http.ResponseWriter, name, id string) *upload {
	us.mu.Lock()
	defer us.mu.Unlock()
	u := us.open[id]
	if u == nil {
		dir := filepath.Join(us.dir, id)
		st, err := loadUploadState(dir)
		if err == nil && st.Repository == name {
			var f *os.File
			if f, err = os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0); err == nil {
				if u, err = us.start(dir, st, f); err != nil {
					f.Close()
				}
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				us.log.Error("reopening an upload in parts", "id", id, "err", err)
			}
		}
		if u == nil {
			serveError(w, errUploadUnknown, "no upload "+id+" in "+name+": it was completed, cancelled or purged; start a new one")
			return nil
		}
		us.open[id] = u
	}
	if u.state.Repository != name {
		serveError(w, errUploadUnknown, "no upload "+id+" in "+name)
		return nil
	}
	return u
}

// putPart writes part n, or the rest of it: a Content-Range of "FROM-TO"
// (bytes within the part, as the OCI chunked upload writes them) continues
// a part from the bytes the server holds. A part held whole is never
// written again.
func (us *uploads) putPart(w http.ResponseWriter, r *http.Request, u *upload, n int) {
	u.mu.Lock()
	if n >= u.state.parts() {
		u.mu.Unlock()
		serveError(w, errRangeInvalid, fmt.Sprintf("part %d: the upload has parts 0 to %d", n, u.state.parts()-1))
		return
	}
	want, held := u.state.partLen(n), u.state.Held[n]
	from := int64(0)
	if cr := r.Header.Get("Content-Range"); cr != "" {
		a, _, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "-")
		v, err := strconv.ParseInt(a, 10, 64)
		if !ok || err != nil || v < 0 {
			u.mu.Unlock()
			serveError(w, errRangeInvalid, fmt.Sprintf("Content-Range %q: expected FROM-TO, bytes within the part", cr))
			return
		}
		from = v
	}
	switch {
	case held == want:
		u.mu.Unlock()
		w.Header().Set("Range", fmt.Sprintf("0-%d", want-1))
		w.WriteHeader(http.StatusNoContent) // already held: a retried part
		return
	case u.writing[n]:
		u.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		serveError(w, errPartBusy, fmt.Sprintf("part %d is being written by another request (a killed client's, until its connection drops): retry, from what GET on the upload says is held", n))
		return
	case from != 0 && from != held:
		u.mu.Unlock()
		if held > 0 {
			w.Header().Set("Range", fmt.Sprintf("0-%d", held-1))
		}
		serveError(w, errRangeInvalid, fmt.Sprintf("part %d: the server holds %d bytes of it; continue from there or from 0", n, held))
		return
	case r.ContentLength != want-from:
		u.mu.Unlock()
		serveError(w, errSizeInvalid, fmt.Sprintf("part %d from byte %d: Content-Length must be %d", n, from, want-from))
		return
	}
	u.writing[n] = true
	if from == 0 {
		u.state.Held[n] = 0
	}
	u.mu.Unlock()

	off := int64(n)*u.state.PartSize + from
	got, err := io.Copy(io.NewOffsetWriter(u.data, off), io.LimitReader(r.Body, want-from))

	u.mu.Lock()
	u.writing[n] = false
	u.state.Held[n] = from + got
	complete := u.state.Held[n] == want
	// The state is saved after every part request, whole or cut short:
	// a resumed client sends only what is missing.
	if serr := saveUploadState(u.dir, u.state); serr != nil && err == nil {
		err = serr
	}
	u.mu.Unlock()
	if complete {
		u.nudge()
	}
	if err != nil || !complete {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		serveError(w, errPartsInvalid, fmt.Sprintf("part %d: %d of %d bytes held: %v; send the rest with Content-Range: %d-%d", n, from+got, want, err, from+got, want-1))
		return
	}
	w.Header().Set("Range", fmt.Sprintf("0-%d", want-1))
	w.WriteHeader(http.StatusNoContent)
}

// nudge wakes the feeder.
func (u *upload) nudge() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// feed copies the parts, in order, into the blob writer as each becomes
// complete: the blob is written and hashed while later parts arrive.
func (u *upload) feed() {
	buf := make([]byte, 1<<20)
	for {
		u.mu.Lock()
		n, parts := u.fed, u.state.parts()
		ready := n < parts && u.state.Held[n] == u.state.partLen(n)
		u.mu.Unlock()
		if n == parts {
			close(u.fedAll)
			return
		}
		if !ready {
			select {
			case <-u.wake:
				continue
			case <-u.quit:
				return
			}
		}
		sr := io.NewSectionReader(u.data, int64(n)*u.state.PartSize, u.state.partLen(n))
		if _, err := io.CopyBuffer(struct{ io.Writer }{u.bw}, sr, buf); err != nil {
			u.mu.Lock()
			u.feedErr = err
			u.mu.Unlock()
			close(u.fedAll)
			return
		}
		u.mu.Lock()
		u.fed++
		u.mu.Unlock()
	}
}

// complete checks that every part arrived, waits for the feeder, and
// commits the blob under the digest the client names: distribution
// verifies it against the bytes written. A digest that does not match
// discards the upload.
func (us *uploads) complete(w http.ResponseWriter, r *http.Request, name, id string, u *upload) {
	d, err := digest.Parse(r.URL.Query().Get("digest"))
	if err != nil {
		serveError(w, errDigestInvalid, "complete an upload with ?digest=sha256:HEX, the blob's digest")
		return
	}
	u.mu.Lock()
	var missing []int
	for i, h := range u.state.Held {
		if h != u.state.partLen(i) { // also a part being written
			missing = append(missing, i)
		}
	}
	busy := u.done
	if len(missing) == 0 && !busy {
		u.done = true
	}
	u.mu.Unlock()
	switch {
	case len(missing) > 0:
		serveError(w, errPartsInvalid, fmt.Sprintf("%d of %d parts are not held whole yet", len(missing), u.state.parts()), transfer.PartsMissing{Missing: missing})
		return
	case busy:
		w.Header().Set("Retry-After", "1")
		serveError(w, errPartBusy, "the upload is being completed by another request")
		return
	}
	select {
	case <-u.fedAll:
	case <-r.Context().Done():
		u.mu.Lock()
		u.done = false
		u.mu.Unlock()
		return
	}
	if u.feedErr != nil {
		us.remove(id, u)
		us.fail(w, "writing the blob", u.feedErr)
		return
	}
	desc, err := u.bw.Commit(r.Context(), ocispec.Descriptor{Digest: d, Size: u.state.Size})
	if err != nil {
		us.remove(id, u)
		var dig distribution.ErrBlobInvalidDigest
		if errors.As(err, &dig) {
			serveError(w, errDigestInvalid, fmt.Sprintf("the parts do not make %s (they make another blob); the upload is discarded: upload the file again", d))
			return
		}
		us.fail(w, "committing the blob", err)
		return
	}
	us.mu.Lock()
	delete(us.open, id)
	us.mu.Unlock()
	u.data.Close()
	os.RemoveAll(u.dir)
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+desc.Digest.String())
	w.Header().Set("Docker-Content-Digest", desc.Digest.String())
	w.WriteHeader(http.StatusCreated)
}

// remove cancels an upload and deletes what it held.
func (us *uploads) remove(id string, u *upload) {
	us.mu.Lock()
	if us.open[id] == u {
		delete(us.open, id)
	}
	us.mu.Unlock()
	u.gone.Do(func() {
		close(u.quit)
		u.bw.Cancel(context.Background())
		u.data.Close()
		os.RemoveAll(u.dir)
	})
}

// count is the uploads on disk, open or not.
func (us *uploads) count() int {
	ents, _ := os.ReadDir(us.dir)
	return len(ents)
}

// purge deletes the uploads untouched (no part written) for uploadMaxAge.
func (us *uploads) purge() {
	ents, _ := os.ReadDir(us.dir)
	for _, e := range ents {
		info, err := os.Stat(filepath.Join(us.dir, e.Name(), "state.json"))
		if err == nil && time.Since(info.ModTime()) < uploadMaxAge {
			continue
		}
		if err != nil {
			if info, err = e.Info(); err == nil && time.Since(info.ModTime()) < time.Hour {
				continue // being created
			}
		}
		us.mu.Lock()
		u := us.open[e.Name()]
		us.mu.Unlock()
		if u != nil {
			us.remove(e.Name(), u)
		} else {
			os.RemoveAll(filepath.Join(us.dir, e.Name()))
		}
		us.log.Info("purged an upload in parts untouched for a week", "id", e.Name())
	}
}

func (us *uploads) fail(w http.ResponseWriter, what string, err error) {
	us.log.Error("upload in parts", "step", what, "err", err)
	serveError(w, errUnknown, what+": "+err.Error())
}

func newUploadID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func saveUploadState(dir string, st uploadState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

func loadUploadState(dir string) (uploadState, error) {
	var st uploadState
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	if st.Size <= 0 || st.PartSize < minPartSize || st.parts() > maxParts || len(st.Held) != st.parts() {
		return st, fmt.Errorf("state of upload %s is corrupt", dir)
	}
	return st, nil
}
