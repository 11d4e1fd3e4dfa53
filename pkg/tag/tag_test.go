package tag

import "testing"

func TestClassify(t *testing.T) {
	for in, want := range map[string]Kind{
		"1.4.0": Version, "v12": Version, "2024-05-01": Version, "1.0.0-rc.1": Version, "v1_final": Version,
		"staging": Stage, "production": Stage, "canary": Stage, "champion": Stage, "ab-test-2": Stage, "latest": Stage,
		"sha256-" + "ab12": Other, "sha256-abcdef.sig": Other, "Prod": Other, "vx": Stage, "": Other, "-x": Other, "a.b": Other,
	} {
		if got := Classify(in); got != want {
			t.Errorf("Classify(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := ValidateVersion("staging"); err == nil {
		t.Error("a stage name must not be accepted as a version")
	}
	if err := ValidateVersion("1.2.3"); err != nil {
		t.Error(err)
	}
	if err := ValidateStage("1.2.3"); err == nil {
		t.Error("a version must not be accepted as a stage")
	}
	if err := ValidateStage("production"); err != nil {
		t.Error(err)
	}
}
