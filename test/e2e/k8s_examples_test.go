package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/pkg/config"
	"go.yaml.in/yaml/v3"
)

// The Kubernetes examples parse, and each names the reference form
// docs/deploy.md gives for it: a view pinned by digest, a view following a
// stage, KServe URIs of a pinned view (oci+native) and of a pinned
// modelcar (oci), a version pinned by digest for CRI-O; the two-replica
// setup of docs/deploy-scale.md has its Deployment, Service, ConfigMap and
// Secret (checked by TestK8sReplicas).
func TestK8sExamples(t *testing.T) {
	want := map[string]*regexp.Regexp{
		"pod-image-volume.yaml":     regexp.MustCompile(`reference: \S+/image@sha256:[0-9a-f]{64}\n`),
		"pod-stage-volume.yaml":     regexp.MustCompile(`reference: \S+/image:[a-z][a-z0-9-]*\n\s+pullPolicy: Always`),
		"kserve-oci-native.yaml":    regexp.MustCompile(`storageUri: oci\+native://\S+/image@sha256:[0-9a-f]{64}\n`),
		"kserve-oci-modelcar.yaml":  regexp.MustCompile(`storageUri: oci://\S+/modelcar@sha256:[0-9a-f]{64}\n`),
		"crio-artifact-volume.yaml": regexp.MustCompile(`reference: \S+/fraud@sha256:[0-9a-f]{64}\n`),
		"modelreg-deployment.yaml":  regexp.MustCompile(`kind: Deployment\n`),
		"modelreg-service.yaml":     regexp.MustCompile(`kind: Service\n`),
		"modelreg-configmap.yaml":   regexp.MustCompile(`kind: ConfigMap\n`),
		"modelreg-secret.yaml":      regexp.MustCompile(`kind: Secret\n`),
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

// The two-replica setup: two replicas of `modelreg serve` probed on /readyz
// and /healthz, reading a serve configuration that config.Parse takes
// (S3, replicas, the shared upload secret) and the shared keys from the
// Secret, mounted where serve reads them.
func TestK8sReplicas(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "k8s")
	read := func(name string, v any) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var cm struct{ Data map[string]string }
	read("modelreg-configmap.yaml", &cm)
	cfg, err := config.Parse([]byte(cm.Data["serve.yaml"]))
	if err != nil {
		t.Fatalf("the ConfigMap's serve.yaml: %v", err)
	}
	if cfg.Storage.Driver() != "s3" || !cfg.Shared() || cfg.UploadSecret == "" {
		t.Errorf("serve.yaml: driver %q, replicas %v, uploadSecret %q", cfg.Storage.Driver(), cfg.Shared(), cfg.UploadSecret)
	}
	var secret struct {
		StringData map[string]string `yaml:"stringData"`
	}
	read("modelreg-secret.yaml", &secret)
	if !strings.HasPrefix(secret.StringData["index-url"], "postgres://") {
		t.Errorf("the Secret's index-url is %q, want a postgres:// URL", secret.StringData["index-url"])
	}
	type probe struct {
		HTTPGet struct{ Path string } `yaml:"httpGet"`
	}
	var dep struct {
		Spec struct {
			Replicas int
			Template struct {
				Spec struct {
					Containers []struct {
						Args           []string
						ReadinessProbe probe `yaml:"readinessProbe"`
						LivenessProbe  probe `yaml:"livenessProbe"`
						VolumeMounts   []struct {
							MountPath string `yaml:"mountPath"`
							SubPath   string `yaml:"subPath"`
						} `yaml:"volumeMounts"`
					}
				}
			}
		}
	}
	read("modelreg-deployment.yaml", &dep)
	if dep.Spec.Replicas != 2 || len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("deployment: %d replicas, %d containers", dep.Spec.Replicas, len(dep.Spec.Template.Spec.Containers))
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes: readiness %q, liveness %q", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--config=/etc/modelreg/serve.yaml", "--data=/data", "--index=$(MODELREG_INDEX)"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %s", args, want)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.SubPath
	}
	for path, key := range map[string]string{cfg.UploadSecret: "upload-secret", "/data/modelreg/server-key.pem": "server-key.pem", "/data/modelreg/token-key.pem": "token-key.pem"} {
		if mounts[path] != key {
			t.Errorf("%s is not the Secret's %s (mounts: %v)", path, key, mounts)
		} else if _, ok := secret.StringData[key]; !ok {
			t.Errorf("the Secret has no %s", key)
		}
	}
}
