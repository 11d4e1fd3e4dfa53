// Package archtest checks that docs/architecture.md tells the truth about
// the code: the import graph it shows is the one `go list` reports, and the
// client library links neither the server nor SQLite.
package archtest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/modelreg/modelreg/"

func root(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func goList(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return string(out)
}

// documented reads the ```imports block of docs/architecture.md: one line
// per package, "pkg/x: pkg/y pkg/z".
func documented(t *testing.T) map[string][]string {
	f, err := os.Open(filepath.Join(root(t), "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "```imports":
			in = true
		case in && line == "```":
			return out
		case in && line != "":
			pkg, deps, _ := strings.Cut(line, ":")
			out[pkg] = strings.Fields(deps)
		}
	}
	t.Fatal("docs/architecture.md has no ```imports block")
	return nil
}

// TestImportGraphDocumented fails when a package's imports (within the
// module) differ from what docs/architecture.md says.
func TestImportGraphDocumented(t *testing.T) {
	want := documented(t)
	got := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(goList(t, "-f", "{{.ImportPath}}:{{range .Imports}} {{.}}{{end}}", "./mediatypes", "./pkg/...")), "\n") {
		pkg, deps, _ := strings.Cut(line, ":")
		pkg = strings.TrimPrefix(pkg, module)
		var own []string
		for _, d := range strings.Fields(deps) {
			if strings.HasPrefix(d, module) && !strings.HasPrefix(d, module+"internal/") {
				own = append(own, strings.TrimPrefix(d, module))
			}
		}
		slices.Sort(own)
		got[pkg] = own
	}
	for pkg, deps := range got {
		w, ok := want[pkg]
		if !ok {
			t.Errorf("docs/architecture.md does not list %s (imports: %s)", pkg, strings.Join(deps, " "))
			continue
		}
		slices.Sort(w)
		if !slices.Equal(w, deps) {
			t.Errorf("%s imports %q; docs/architecture.md says %q", pkg, strings.Join(deps, " "), strings.Join(w, " "))
		}
	}
	for pkg := range want {
		if _, ok := got[pkg]; !ok {
			t.Errorf("docs/architecture.md lists %s, which does not exist", pkg)
		}
	}
}

// TestClientLinksNoServer keeps the library a Go program imports free of
// the server, its index and SQLite.
func TestClientLinksNoServer(t *testing.T) {
	deps := goList(t, "-deps", "./pkg/client")
	for _, bad := range []string{module + "pkg/server", module + "pkg/index", "modernc.org/sqlite", "github.com/distribution/distribution/v3/registry/handlers"} {
		if slices.Contains(strings.Fields(deps), bad) {
			t.Errorf("pkg/client links %s", bad)
		}
	}
}

// TestClientLinksNoCloudSDK keeps the cloud SDKs the server's storage
// drivers need (AWS, Azure, Google Cloud) out of the library a Go program
// imports: a training job pushing a model must not link them.
func TestClientLinksNoCloudSDK(t *testing.T) {
	for _, pkg := range strings.Fields(goList(t, "-deps", "./pkg/client")) {
		for _, bad := range []string{"github.com/aws/", "github.com/Azure/", "cloud.google.com/", "google.golang.org/api"} {
			if strings.HasPrefix(pkg, bad) {
				t.Errorf("pkg/client links %s (a cloud SDK; it belongs to the server's storage drivers only)", pkg)
			}
		}
	}
	// The check would pass vacuously if the SDKs were gone entirely: the
	// server links the S3 driver's.
	if !strings.Contains(goList(t, "-deps", "./pkg/server"), "github.com/aws/aws-sdk-go/service/s3\n") {
		t.Error("pkg/server does not link the AWS SDK's S3 client: is the s3-aws storage driver still registered?")
	}
}
