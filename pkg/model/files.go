package model

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	ignore "github.com/sabhiram/go-gitignore"

	"github.com/modelreg/modelreg/mediatypes"
)

// File is one file of a model tree, as it will be stored in one layer.
type File struct {
	// Path is the slash-separated path inside the model tree ("weights/a.safetensors").
	Path string
	// Source is where the file is read from on the local disk.
	Source string
	// Mode holds the permission bits restored on pull.
	Mode fs.FileMode
	// Size is the file's length in bytes.
	Size int64
	// Kind is the ModelPack layer kind: one of Kinds.
	Kind string
}

// MediaType is the layer media type the file is stored under. modelreg
// always stores files raw: one file per layer, never compressed.
func (f File) MediaType() string {
	return mediatypes.Layer(mediatypes.CNCFPrefix+f.Kind+".v1", mediatypes.EncodingRaw)
}

// Layer kinds of ModelPack, as accepted by --layer-type.
const (
	KindWeight       = "weight"
	KindWeightConfig = "weight.config"
	KindDoc          = "doc"
	KindCode         = "code"
	KindDataset      = "dataset"
)

// Kinds lists the layer kinds in the order they are documented.
var Kinds = []string{KindWeight, KindWeightConfig, KindDoc, KindCode, KindDataset}

var kindByExt = map[string]string{}

func init() {
	for kind, exts := range map[string][]string{
		KindWeight: {".safetensors", ".gguf", ".ggml", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5",
			".keras", ".pb", ".tflite", ".pkl", ".pickle", ".joblib", ".msgpack", ".mlmodel", ".npz",
			".npy", ".pdparams", ".ot", ".engine", ".plan", ".mar", ".xgb", ".ubj", ".lgb", ".cbm"},
		KindWeightConfig: {".json", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".model", ".tiktoken", ".vocab", ".spm"},
		KindDoc:          {".md", ".rst", ".pdf", ".html", ".htm", ".adoc"},
		KindCode:         {".py", ".ipynb", ".sh", ".go", ".js", ".ts", ".r", ".jl", ".c", ".cc", ".cpp", ".h", ".hpp", ".java", ".scala", ".rs", ".lua", ".sql"},
		KindDataset:      {".csv", ".tsv", ".parquet", ".jsonl", ".arrow", ".tfrecord", ".avro", ".orc"},
	} {
		for _, e := range exts {
			kindByExt[e] = kind
		}
	}
}

// Classify picks the layer kind of a file from its name: weights by their
// format's extension, docs and licences, code, datasets; every other file is
// treated as configuration of the weights (tokenizers, vocabularies).
func Classify(p string) string {
	base := strings.ToLower(path.Base(p))
	for _, doc := range []string{"readme", "license", "licence", "notice", "model_card", "modelcard", "changelog", "citation"} {
		if strings.HasPrefix(base, doc) {
			return KindDoc
		}
	}
	switch base {
	case "dockerfile", "makefile", "requirements.txt", "pyproject.toml", "setup.py", "environment.yml", "conda.yaml", "mlproject":
		return KindCode
	}
	if k, ok := kindByExt[path.Ext(base)]; ok {
		return k
	}
	return KindWeightConfig
}

// Rule overrides Classify for files whose path or base name matches Pattern
// (path.Match syntax): "*.bin=dataset".
type Rule struct {
	Pattern string
	Kind    string
}

// ParseRules parses repeated --layer-type PATTERN=KIND flags.
func ParseRules(specs []string) ([]Rule, error) {
	var rules []Rule
	for _, s := range specs {
		pat, kind, ok := strings.Cut(s, "=")
		if kind == "config" {
			kind = KindWeightConfig
		}
		if !ok || pat == "" || !slices.Contains(Kinds, kind) {
			return nil, fmt.Errorf("layer type rule %q: expected PATTERN=KIND with KIND one of %s, e.g. '*.bin=dataset'", s, strings.Join(Kinds, ", "))
		}
		if _, err := path.Match(pat, ""); err != nil {
			return nil, fmt.Errorf("layer type rule %q: bad pattern: %v", s, err)
		}
		rules = append(rules, Rule{Pattern: pat, Kind: kind})
	}
	return rules, nil
}

func kindOf(p string, rules []Rule) string {
	for _, r := range rules {
		if ok, _ := path.Match(r.Pattern, p); ok {
			return r.Kind
		}
		if ok, _ := path.Match(r.Pattern, path.Base(p)); ok {
			return r.Kind
		}
	}
	return Classify(p)
}

// Collect turns the paths given on a command line into the files of a model
// tree. A directory contributes every file below it, with paths relative to
// that directory; a file contributes itself under its base name. Symbolic
// links to files are followed (their content is stored); a symbolic link to
// a directory inside a tree is refused, as are devices, sockets and pipes.
// Empty directories are not stored. The result is sorted by Path, which
// keeps manifests reproducible.
func Collect(paths []string, rules []Rule) ([]File, error) {
	files, _, err := collect(paths, rules, false)
	return files, err
}

// IgnoreFile, at the root of a directory pushed, lists what to leave out
// of it, in .gitignore syntax.
const IgnoreFile = ".modelregignore"

// DefaultIgnore is left out of every directory pushed (CollectIgnoring):
// version control, operating system litter, tool caches, and the ignore
// file itself.
var DefaultIgnore = []string{".git/", ".DS_Store", ".cache/", IgnoreFile}

// CollectIgnoring is Collect leaving out, in each directory given, what
// DefaultIgnore and the directory's IgnoreFile match (a file given by name
// is always taken). skipped lists what was left out: files by path,
// directories once, with a trailing slash.
func CollectIgnoring(paths []string, rules []Rule) (files []File, skipped []string, err error) {
	return collect(paths, rules, true)
}

// ignoreRules reads the rules that apply under root.
func ignoreRules(root string) (*ignore.GitIgnore, error) {
	lines := slices.Clone(DefaultIgnore)
	b, err := os.ReadFile(filepath.Join(root, IgnoreFile))
	switch {
	case err == nil:
		lines = append(lines, strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")...)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(root, IgnoreFile), err)
	}
	return ignore.CompileIgnoreLines(lines...), nil
}

func collect(paths []string, rules []Rule, ignoring bool) ([]File, []string, error) {
	var skipped []string
	if len(paths) == 0 {
		return nil, nil, errors.New("no files to push: give at least one file or directory")
	}
	var files []File
	seen := map[string]string{}
	add := func(rel, src string, info fs.FileInfo) error {
		if prev, dup := seen[rel]; dup {
			return fmt.Errorf("%s and %s would both be stored as %q: push them from different directories or rename one", prev, src, rel)
		}
		seen[rel] = src
		files = append(files, File{Path: rel, Source: src, Mode: info.Mode().Perm(), Size: info.Size(), Kind: kindOf(rel, rules)})
		return nil
	}
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, nil, fmt.Errorf("%s: no such file or directory", root)
			}
			return nil, nil, err
		}
		if info.Mode().IsRegular() {
			if err := add(filepath.Base(root), root, info); err != nil {
				return nil, nil, err
			}
			continue
		}
		if !info.IsDir() {
			return nil, nil, fmt.Errorf("%s: not a regular file or directory (%s); only files and directories can be pushed", root, info.Mode().Type())
		}
		var ign *ignore.GitIgnore
		if ignoring {
			if ign, err = ignoreRules(root); err != nil {
				return nil, nil, err
			}
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				if ign != nil && rel != "." && ign.MatchesPath(rel+"/") {
					skipped = append(skipped, rel+"/")
					return filepath.SkipDir
				}
				return nil
			}
			if ign != nil && ign.MatchesPath(rel) {
				skipped = append(skipped, rel)
				return nil
			}
			info, err := os.Stat(p) // follows symbolic links
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && d.Type()&fs.ModeSymlink != 0 {
					return fmt.Errorf("%s: symbolic link points to a missing file", p)
				}
				return err
			}
			switch {
			case info.Mode().IsRegular():
				return add(rel, p, info)
			case info.IsDir():
				return fmt.Errorf("%s: symbolic link to a directory is not followed; push the directory it points to as its own argument", p)
			default:
				return fmt.Errorf("%s: not a regular file (%s); remove it from the tree", p, info.Mode().Type())
			}
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if len(files) == 0 {
		if len(skipped) > 0 {
			return nil, nil, fmt.Errorf("no files to push under %s: all were left out (%s); see %s", strings.Join(paths, ", "), strings.Join(skipped, ", "), IgnoreFile)
		}
		return nil, nil, fmt.Errorf("no files found under %s", strings.Join(paths, ", "))
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, skipped, nil
}

// CheckPath reports whether p is safe to create under a pull's destination:
// relative, clean, slash-separated, inside the tree. Paths come from
// annotations that anyone with push rights controls, so this runs on every
// pull before any file is written.
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty file path")
	case strings.Contains(p, `\`):
		return fmt.Errorf("file path %q contains a backslash", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("file path %q contains a NUL byte", p)
	case path.IsAbs(p) || filepath.IsAbs(p):
		return fmt.Errorf("file path %q is absolute", p)
	case path.Clean(p) != p || !filepath.IsLocal(filepath.FromSlash(p)):
		return fmt.Errorf("file path %q leaves the model directory or is not clean (.., ., //)", p)
	}
	return nil
}
