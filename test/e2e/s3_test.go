package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/modelreg/modelreg/pkg/catalog"
	"github.com/modelreg/modelreg/pkg/transfer"
)

// s3Store is a running SeaweedFS with its S3 gateway on loopback and one
// bucket made for the test.
type s3Store struct {
	Endpoint, Bucket, AccessKey, SecretKey string
	client                                 *s3.S3
	// stop stops SeaweedFS (also done when the test ends).
	stop func()
}

// startWeed runs `weed server -s3` (master, volume, filer and S3 gateway
// in one process) on free loopback ports in a temp dir until the test
// ends, with one S3 identity, and makes a bucket. A missing weed binary
// fails the test with the command that builds it: the storage tests are
// never skipped.
func startWeed(t *testing.T) *s3Store {
	t.Helper()
	weed := os.Getenv("MODELREG_WEED")
	if weed == "" {
		t.Fatal("MODELREG_WEED is not set: the S3 tests run against SeaweedFS; build it with `make tools` (or the $(WEED) target; about 8 minutes cold, then cached) and run them with `make test`, which sets it")
	}
	if _, err := os.Stat(weed); err != nil {
		t.Fatalf("MODELREG_WEED=%s: %v; build it with `make tools`", weed, err)
	}
	dir := t.TempDir()
	st := &s3Store{Bucket: "models", AccessKey: "modelreg", SecretKey: "modelreg-secret-key"}
	cfg := filepath.Join(dir, "s3.json")
	writeFile(t, cfg, fmt.Sprintf(`{"identities": [{"name": "modelreg", "credentials": [{"accessKey": %q, "secretKey": %q}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}`, st.AccessKey, st.SecretKey), 0o600)
	ports := freePorts(t, 8)
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+data,
		"-master.port="+p(0), "-master.port.grpc="+p(1), "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
		"-volume.port="+p(2), "-volume.port.grpc="+p(3), "-volume.max=0",
		"-filer", "-filer.port="+p(4), "-filer.port.grpc="+p(5), "-filer.localSocket="+filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port="+p(6), "-s3.port.grpc="+p(7), "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config="+cfg,
		"-s3.localSocket="+filepath.Join(dir, "s3.sock"))
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var stopped bool
	st.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logs.Close()
	}
	t.Cleanup(func() { st.stop() })
	st.Endpoint = "http://127.0.0.1:" + p(6)
	sess, err := session.NewSession(&aws.Config{
		Region: aws.String("us-east-1"), Endpoint: aws.String(st.Endpoint), S3ForcePathStyle: aws.Bool(true),
		Credentials: credentials.NewStaticCredentials(st.AccessKey, st.SecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	st.client = s3.New(sess)
	// The gateway answers once master, volume and filer are up: try to
	// make the bucket until it does (or weed exits).
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, err := st.client.CreateBucket(&s3.CreateBucketInput{Bucket: aws.String(st.Bucket)})
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("weed server exited (%v) before its S3 gateway answered:\n%s", werr, tail(b))
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("SeaweedFS's S3 gateway did not take a bucket within 90s: %v\n%s", err, tail(b))
		}
	}
	return st
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	var out []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// config writes a `modelreg serve --config` file storing on st, with
// extra YAML appended (redirect settings, replicas).
func (st *s3Store) config(t *testing.T, storageExtra, extra string) string {
	path := filepath.Join(t.TempDir(), "serve.yaml")
	writeFile(t, path, fmt.Sprintf(`storage:
  s3:
    region: us-east-1
    regionendpoint: %s
    forcepathstyle: true
    bucket: %s
    accesskey: %s
    secretkey: %s
    rootdirectory: /registry
%s%s`, st.Endpoint, st.Bucket, st.AccessKey, st.SecretKey, storageExtra, extra), 0o600)
	return path
}

// objects counts the objects under prefix in the bucket.
func (st *s3Store) objects(t *testing.T, prefix string) int {
	n := 0
	err := st.client.ListObjectsV2Pages(&s3.ListObjectsV2Input{Bucket: aws.String(st.Bucket), Prefix: aws.String(prefix)}, func(p *s3.ListObjectsV2Output, _ bool) bool {
		n += len(p.Contents)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// modelreg serve on S3: modelreg and oras push and pull through it with
// digests verified, a file sent in parts (one process) lands on S3, blob
// GETs are answered with 307 to the store when redirects are on, and
// modelreg pull still verifies what it gets there; a new server with
// --reindex rebuilds its index from S3 alone.
func TestS3Storage(t *testing.T) {
	st := startWeed(t)
	e := newEnv(t)
	src := filepath.Join(e.dir, "model")
	weights := writeRandom(t, filepath.Join(src, "model.safetensors"), 65<<20, 7)
	writeFile(t, filepath.Join(src, "config.json"), `{"layers": 2}`, 0o644)
	want := tree(t, src)

	// Redirects off: every byte through modelreg serve.
	direct := startServer(t, "--config", st.config(t, "  redirect:\n    disable: true\n", ""))
	ref := direct.Addr + "/team/s3:1.0.0"
	push := decode[transfer.PushResult](t, e.ok("push", ref, src, "--connections", "4", "--output", "json").Stdout)
	if push.Files != 2 {
		t.Fatalf("push: %+v", push)
	}
	if n := st.objects(t, "registry/docker/registry/v2/blobs/"); n < 3 {
		t.Errorf("%d blob objects in the bucket after a push, want at least 3 (config, two files)", n)
	}
	if _, err := os.Stat(filepath.Join(direct.Data, "docker")); err == nil {
		t.Errorf("blobs were written under --data, not to S3")
	}
	out := filepath.Join(e.dir, "pulled")
	pull := decode[transfer.PullResult](t, e.ok("pull", ref, "-o", out, "--output", "json").Stdout)
	if pull.Digest != push.Digest {
		t.Errorf("pull digest %s, push digest %s", pull.Digest, push.Digest)
	}
	sameTree(t, want, tree(t, out))

	// oras, a client that knows nothing of modelreg.
	writeFile(t, filepath.Join(e.dir, "notes.txt"), "pushed with oras\n", 0o644)
	e.oras("push", direct.Addr+"/team/oras:1", "notes.txt")
	e.oras("pull", direct.Addr+"/team/oras:1", "-o", "oras-out")
	if b, err := os.ReadFile(filepath.Join(e.dir, "oras-out", "notes.txt")); err != nil || string(b) != "pushed with oras\n" {
		t.Errorf("oras pull: %q %v", b, err)
	}

	// Redirects on (distribution's default for S3): a second server on
	// the same bucket answers blob GETs with 307 to a signed URL of the
	// store; its index is rebuilt from S3 (--reindex, and a new --data).
	redirected := startServer(t, "--config", st.config(t, "", ""), "--reindex")
	l := decode[catalog.Listing](t, e.ok("list", redirected.Addr+"/team/s3", "--output", "json").Stdout)
	if len(l.Versions) != 1 || l.Versions[0].Digest != push.Digest {
		t.Errorf("the index rebuilt from S3 lists %+v, want the version pushed (%s)", l.Versions, push.Digest)
	}
	var versions struct{ Versions []struct{ Digest string } }
	apiGet(t, redirected.Addr, "models/team/s3/versions", &versions)
	if len(versions.Versions) != 1 {
		t.Errorf("model API after the rebuild: %+v", versions)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + redirected.Addr + "/v2/team/s3/blobs/sha256:" + weights)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, st.Endpoint+"/") {
		t.Fatalf("blob GET with redirects on: %s, Location %q; want 307 to %s", resp.Status, loc, st.Endpoint)
	}
	// The signed URL serves the blob's bytes, without modelreg serve.
	resp, err = http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	io.Copy(h, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || hex.EncodeToString(h.Sum(nil)) != weights {
		t.Errorf("the store's URL: %s, sha256 %x, want %s", resp.Status, h.Sum(nil), weights)
	}
	// HEAD is redirected too (distribution's behaviour); followed, the
	// store answers with the blob's size.
	head, err := http.Head("http://" + redirected.Addr + "/v2/team/s3/blobs/sha256:" + weights)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK || head.ContentLength != 65<<20 || head.Request.URL.Host == redirected.Addr {
		t.Errorf("blob HEAD: %s, %d bytes, answered by %s", head.Status, head.ContentLength, head.Request.URL.Host)
	}
	out2 := filepath.Join(e.dir, "pulled-redirected")
	pull2 := decode[transfer.PullResult](t, e.ok("pull", redirected.Addr+"/team/s3:1.0.0", "-o", out2, "--output", "json").Stdout)
	if pull2.Digest != push.Digest {
		t.Errorf("redirected pull digest %s, want %s", pull2.Digest, push.Digest)
	}
	sameTree(t, want, tree(t, out2))

	// The client checks the digest of what the store sends: a blob whose
	// object was changed in the bucket fails the pull.
	key := fmt.Sprintf("registry/docker/registry/v2/blobs/sha256/%s/%s/data", weights[:2], weights)
	if _, err := st.client.PutObject(&s3.PutObjectInput{Bucket: aws.String(st.Bucket), Key: aws.String(key), Body: bytes.NewReader(bytes.Repeat([]byte{1}, 65<<20))}); err != nil {
		t.Fatal(err)
	}
	e.fails([]string{"failed digest verification"}, "pull", redirected.Addr+"/team/s3:1.0.0", "-o", filepath.Join(e.dir, "tampered"))

	// Readiness follows the store: ready while S3 answers, 503 (and
	// still alive) once it is gone.
	if resp, err := http.Get("http://" + redirected.Addr + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with S3 up: %v %v", resp, err)
	}
	st.stop()
	resp, err = http.Get("http://" + redirected.Addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "s3aws storage does not answer") {
		t.Errorf("/readyz with S3 gone: %s %s", resp.Status, body)
	}
	if resp, err := http.Get("http://" + redirected.Addr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with S3 gone: %v %v", resp, err)
	}
}
