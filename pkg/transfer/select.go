package transfer

import (
	"fmt"
	"path"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/modelreg/modelreg/pkg/model"
)

// selection is which files of a version a pull fetches: those matching an
// include pattern (all when there is none) and no exclude pattern. A
// pattern without a slash matches a file's base name at any depth
// (`*.json`); one with a slash matches the whole path, `**` spanning
// directories (`weights/model-0000[1-2]-*.safetensors`, `**/tokenizer*`);
// one ending in a slash matches everything under that directory
// (`shards/`).
type selection struct {
	include, exclude []string
}

func newSelection(include, exclude []string) (*selection, error) {
	for _, p := range append(append([]string{}, include...), exclude...) {
		if p == "" || !doublestar.ValidatePattern(p) {
			return nil, fmt.Errorf("pattern %q is not a valid glob (use *, ?, [..], {a,b} and ** for any depth)", p)
		}
	}
	if len(include) == 0 && len(exclude) == 0 {
		return nil, nil
	}
	return &selection{include: include, exclude: exclude}, nil
}

func matches(pattern, p string) bool {
	if strings.HasSuffix(pattern, "/") {
		pattern += "**" // a directory: everything under it
	}
	if !strings.Contains(pattern, "/") {
		p = path.Base(p)
	}
	ok, _ := doublestar.Match(pattern, p)
	return ok
}

func (s *selection) wants(p string) bool {
	if s == nil {
		return true
	}
	in := len(s.include) == 0
	for _, pat := range s.include {
		in = in || matches(pat, p)
	}
	if !in {
		return false
	}
	for _, pat := range s.exclude {
		if matches(pat, p) {
			return false
		}
	}
	return true
}

// apply splits files into those fetched and the paths skipped; selecting
// nothing is an error naming what the version holds.
func (s *selection) apply(files []model.FileEntry) (keep []model.FileEntry, skipped []string, err error) {
	if s == nil {
		return files, nil, nil
	}
	var all []string
	for _, f := range files {
		all = append(all, f.Path)
		if s.wants(f.Path) {
			keep = append(keep, f)
		} else {
			skipped = append(skipped, f.Path)
		}
	}
	if len(keep) == 0 {
		if len(all) > 10 {
			all = append(all[:10], fmt.Sprintf("and %d more", len(all)-10))
		}
		return nil, nil, fmt.Errorf("no file of the version matches --include %q --exclude %q; it holds %s", s.include, s.exclude, strings.Join(all, ", "))
	}
	return keep, skipped, nil
}
