package remote

import (
	"strings"
	"testing"
)

func TestParseReference(t *testing.T) {
	ref, err := ParseReference("localhost:5000/team/fraud:1.4.0")
	if err != nil || ref.Registry != "localhost:5000" || ref.Repository != "team/fraud" || ref.Reference != "1.4.0" {
		t.Errorf("%+v %v", ref, err)
	}
	for _, bad := range []string{"fraud", "localhost:5000/Team/x:1", "localhost:5000/x:bad tag", "localhost:5000/x@sha256:zz"} {
		_, err := ParseReference(bad)
		if err == nil || !strings.Contains(err.Error(), "expected REGISTRY/REPOSITORY") {
			t.Errorf("ParseReference(%q): %v", bad, err)
		}
	}
}

func TestIsLocalhost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1:5000": true, "[::1]:5000": true, "127.1.2.3": true, "registry.localhost": true,
		"ghcr.io": false, "10.0.0.1:5000": false, "localhost.example.com": false,
	} {
		if got := IsLocalhost(host); got != want {
			t.Errorf("IsLocalhost(%q) = %v", host, got)
		}
	}
}
