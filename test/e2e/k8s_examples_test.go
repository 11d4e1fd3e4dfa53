package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The Kubernetes examples parse, and each names the reference form
// docs/deploy.md gives for it: a view pinned by digest, a view following a
// stage, KServe URIs of a pinned view (oci+native) and of a pinned
// modelcar (oci), a version pinned by digest for CRI-O.
func TestK8sExamples(t *testing.T) {
	want := map[string]*regexp.Regexp{
		"pod-image-volume.yaml":     regexp.MustCompile(`reference: \S+/image@sha256:[0-9a-f]{64}\n`),
		"pod-stage-volume.yaml":     regexp.MustCompile(`reference: \S+/image:[a-z][a-z0-9-]*\n\s+pullPolicy: Always`),
		"kserve-oci-native.yaml":    regexp.MustCompile(`storageUri: oci\+native://\S+/image@sha256:[0-9a-f]{64}\n`),
		"kserve-oci-modelcar.yaml":  regexp.MustCompile(`storageUri: oci://\S+/modelcar@sha256:[0-9a-f]{64}\n`),
		"crio-artifact-volume.yaml": regexp.MustCompile(`reference: \S+/fraud@sha256:[0-9a-f]{64}\n`),
	}
	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "k8s", "*.yaml"))
	if len(files) != len(want) {
		t.Fatalf("examples/k8s has %d files, the test knows %d", len(files), len(want))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if doc["apiVersion"] == nil || doc["kind"] == nil {
			t.Errorf("%s: no apiVersion or kind", f)
		}
		re := want[filepath.Base(f)]
		if re == nil || !re.Match(b) {
			t.Errorf("%s does not name the reference docs/deploy.md gives for it", f)
		}
		if strings.Contains(filepath.Base(f), "pod-image") && !strings.Contains(string(b), "subPath: models") {
			t.Errorf("%s: the view's files are under models/: mount with subPath: models", f)
		}
	}
}
