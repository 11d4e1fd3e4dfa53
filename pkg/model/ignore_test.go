package model

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A push leaves out version control, OS litter and caches, and what the
// directory's .modelregignore lists (negations included); a file named on
// the command line is always taken; Collect itself ignores nothing.
func TestCollectIgnoring(t *testing.T) {
	root := t.TempDir()
	for p, content := range map[string]string{
		".git/config": "x", "sub/.DS_Store": "x", ".cache/hf/blob": "x",
		IgnoreFile: "# scratch\n*.tmp\n!keep.tmp\nckpt/\n",
		"a.tmp":    "x", "keep.tmp": "x", "ckpt/step-1.bin": "x", "sub/ckpt/step-2.bin": "x", "model.bin": "x", "sub/w.safetensors": "x",
	} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	extra := filepath.Join(t.TempDir(), "named.tmp")
	os.WriteFile(extra, []byte("x"), 0o644)
	files, skipped, err := CollectIgnoring([]string{root, extra}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Path)
	}
	if want := []string{"keep.tmp", "model.bin", "named.tmp", "sub/w.safetensors"}; !slices.Equal(got, want) {
		t.Errorf("pushed %q, want %q", got, want)
	}
	slices.Sort(skipped)
	if want := []string{".cache/", ".git/", IgnoreFile, "a.tmp", "ckpt/", "sub/.DS_Store", "sub/ckpt/"}; !slices.Equal(skipped, want) {
		t.Errorf("left out %q, want %q", skipped, want)
	}
	all, err := Collect([]string{root}, nil)
	if err != nil || len(all) != 10 {
		t.Errorf("Collect took %d files, %v; want all 10", len(all), err)
	}
	// Everything left out: an error that says why.
	only := t.TempDir()
	os.MkdirAll(filepath.Join(only, ".git"), 0o755)
	os.WriteFile(filepath.Join(only, ".git", "HEAD"), []byte("x"), 0o644)
	if _, _, err := CollectIgnoring([]string{only}, nil); err == nil || !strings.Contains(err.Error(), "left out") {
		t.Errorf("a tree of ignored files: %v", err)
	}
}
