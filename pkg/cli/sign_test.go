package cli

import "testing"

func TestClosestStage(t *testing.T) {
	stages := []string{"canary", "production", "staging"}
	for in, want := range map[string]string{
		"prodution":   "production", // deletion
		"prodcution":  "production", // transposition
		"Production":  "production",
		"stagnig":     "staging",
		"canery":      "canary",
		"prod":        "",
		"qa":          "",
		"development": "",
	} {
		if got := closest(in, stages); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
	if got := closest("dev", []string{"dev1", "prod"}); got != "dev1" {
		t.Errorf("short names: %q", got)
	}
	if got := closest("qa", []string{"uat"}); got != "" {
		t.Errorf("qa -> %q", got)
	}
}
