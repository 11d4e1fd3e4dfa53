// Package e2e drives the modelreg binary as a user would: a real
// `modelreg serve` process, the real oras CLI, real files on disk.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelreg/modelreg/internal/pgtest"

	"github.com/modelreg/modelreg/internal/fixture"
)

// The binaries under test: modelreg, built from this tree, and the pinned
// real clients and registry the Makefile installs.
var (
	modelregBin string
	orasBin     string
	craneBin    string
	cosign2Bin  string
	cosign3Bin  string
	registryBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "modelreg-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	modelregBin = filepath.Join(dir, "modelreg")
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	build := exec.Command("go", "build", "-o", modelregBin, "./cmd/modelreg")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building modelreg:", err)
		return 1
	}
	for _, tool := range []struct {
		env string
		bin *string
	}{{"MODELREG_ORAS", &orasBin}, {"MODELREG_CRANE", &craneBin}, {"MODELREG_COSIGN2", &cosign2Bin}, {"MODELREG_COSIGN3", &cosign3Bin}, {"MODELREG_DISTRIBUTION", &registryBin}} {
		*tool.bin = os.Getenv(tool.env)
		if *tool.bin == "" {
			fmt.Fprintf(os.Stderr, "%s is not set: run the tests with `make test`, which installs the pinned tools\n", tool.env)
			return 1
		}
		if _, err := os.Stat(*tool.bin); err != nil {
			fmt.Fprintf(os.Stderr, "%s=%s: %v; run `make test`\n", tool.env, *tool.bin, err)
			return 1
		}
	}
	return pgtest.Run(m) // stops the PostgreSQL cluster the replica tests start
}

// registry is a running `modelreg serve` process.
type registry struct {
	Addr string
	Data string
}

// startServer runs `modelreg serve` on a free loopback port until the test ends.
func startServer(t *testing.T, args ...string) *registry {
	t.Helper()
	return startServerIn(t, t.TempDir(), args...)
}

// startServerIn runs `modelreg serve` over the data directory data.
func startServerIn(t *testing.T, data string, args ...string) *registry {
	t.Helper()
	return startServe(t, data, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data, "--log-format", "json"}, args...))
}

// startServe runs modelreg with args (a serve command line) until the
// test ends; data is what the registry reports as its data directory.
func startServe(t *testing.T, data string, args []string) *registry {
	t.Helper()
	cmd := exec.Command(modelregBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "registry listening" {
				addr <- rec.Addr
			}
			logs.WriteString(line + "\n")
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("modelreg serve exited with %v after SIGTERM", err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("modelreg serve did not stop within 20s of SIGTERM")
		}
	})
	select {
	case a := <-addr:
		return &registry{Addr: a, Data: data}
	case <-time.After(30 * time.Second):
		t.Fatalf("modelreg serve did not start; logs:\n%s", logs.String())
	}
	return nil
}

// startPlainRegistry runs plain distribution (the registry binary users run
// today, without the Referrers API) on a free loopback port.
func startPlainRegistry(t *testing.T) *registry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	data := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.yml")
	writeFile(t, cfg, fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", data, addr), 0o644)
	cmd := exec.Command(registryBin, "serve", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return &registry{Addr: addr, Data: data}
		}
	}
	t.Fatalf("plain registry did not start:\n%s", logs.String())
	return nil
}

// result is one finished command.
type result struct {
	Code           int
	Stdout, Stderr string
}

// env is a user's environment: its own HOME and docker config, so
// credentials never leak between tests or from the machine.
type env struct {
	t    *testing.T
	home string
	dir  string
}

// keyPassword encrypts every cosign key the tests make.
const keyPassword = "correct horse"

func newEnv(t *testing.T) *env {
	home := t.TempDir()
	return &env{t: t, home: home, dir: t.TempDir()}
}

func (e *env) environ(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "DOCKER_CONFIG=") || strings.HasPrefix(kv, "MODELREG_") || strings.HasPrefix(kv, "COSIGN_") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "HOME="+e.home, "DOCKER_CONFIG="+filepath.Join(e.home, ".docker"), "COSIGN_PASSWORD="+keyPassword)
	return append(out, extra...)
}

func (e *env) exec(stdin string, extraEnv []string, bin string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = e.dir
	cmd.Env = e.environ(extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("running %s: %v", bin, err)
		}
		code = ee.ExitCode()
	}
	return result{Code: code, Stdout: out.String(), Stderr: errb.String()}
}

// modelreg runs the modelreg binary and returns what it did.
func (e *env) modelreg(args ...string) result {
	e.t.Helper()
	return e.exec("", nil, modelregBin, args...)
}

// ok runs modelreg and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.modelreg(args...)
	if r.Code != 0 {
		e.t.Fatalf("modelreg %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// fails runs modelreg, expects a non-zero exit, and checks that stderr
// holds every wanted fragment.
func (e *env) fails(want []string, args ...string) result {
	e.t.Helper()
	r := e.modelreg(args...)
	if r.Code == 0 {
		e.t.Fatalf("modelreg %s: succeeded, want failure\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Stdout, r.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.Stderr, w) {
			e.t.Errorf("modelreg %s: stderr does not mention %q:\n%s", strings.Join(args, " "), w, r.Stderr)
		}
	}
	return r
}

// oras runs the real oras CLI against a loopback registry (plain HTTP).
func (e *env) oras(args ...string) result {
	e.t.Helper()
	r := e.exec("", nil, orasBin, append(args, "--plain-http")...)
	if r.Code != 0 {
		e.t.Fatalf("oras %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// writeRandom writes size pseudo-random bytes to path and returns their sha256.
func writeRandom(t *testing.T, path string, size int64, seed uint64) string {
	t.Helper()
	sum, err := fixture.WriteRandom(path, size, seed)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// tree maps each regular file below root to "mode sha256".
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = fmt.Sprintf("%04o %x", info.Mode().Perm(), h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, want, got map[string]string) {
	t.Helper()
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing after pull", p)
		} else if g != w {
			t.Errorf("%s: got %s, want %s", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s appeared after pull", p)
		}
	}
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return v
}

// noLeftovers fails if dir's parent holds a pull's temporary directory or dir itself.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s exists after a failed pull", dir)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".partial-") {
			t.Errorf("temporary directory %s left behind", e.Name())
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var osReadFile = os.ReadFile

// apiGet decodes a model API answer, failing the test on any other status than 200.
func apiGet(t *testing.T, addr, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v2/_modelreg/v1/" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
