package lineage

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/modelreg/modelreg/pkg/key"
	"github.com/modelreg/modelreg/pkg/remote"
	"oras.land/oras-go/v2/registry"
)

// Node is one element of a lineage graph: a model version, or a dataset
// or code input (leaves).
type Node struct {
	Kind string `json:"kind"`
	// Ref is REGISTRY/REPO@DIGEST for a model, the URI otherwise.
	Ref      string `json:"ref"`
	Digest   string `json:"digest,omitempty"`
	Revision string `json:"revision,omitempty"`
	// Signed is true when a trusted key signed a statement naming this edge.
	Signed bool `json:"signed"`
	// At is where the walk read this model when that is not the registry
	// its reference names: REGISTRY/REPO in the registry the walk runs
	// against, which holds the same digest (a copy).
	At       string  `json:"at,omitempty"`
	Note     string  `json:"note,omitempty"`
	Children []*Node `json:"children,omitempty"`
	// tried says where the walk looked before the recorded host.
	tried string
}

// Walker walks lineage across repositories and registries.
type Walker struct {
	// Open connects to a repository named by a reference.
	Open func(ref registry.Reference) (registry.Repository, error)
	// Trusted verifies signed lineage.
	Trusted []key.Public
	// MaxDepth bounds the walk (default 10).
	MaxDepth int
	// Home is the registry the walk runs against. A model input recorded
	// at another host (the dev registry a model was copied from) is looked
	// for here first, by digest: in the same repository path, then
	// through Locate; the recorded host is only a hint, used when Home
	// lacks the digest. So a walk over copied models needs no other
	// registry (docs/lineage.md, "Where a walk finds a model"). "" walks
	// every reference at its recorded host.
	Home string
	// Locate, when set, finds a digest anywhere in Home (modelreg serve's
	// index) and returns the repository holding it, "" when none does.
	Locate func(ctx context.Context, digest string) (repository string, err error)
}

// Up walks ancestors: the inputs of ref, the inputs of every model among
// them, and so on. A model met again on the same path is a cycle: the walk
// stops there and says so; past MaxDepth it stops too.
func (w *Walker) Up(ctx context.Context, ref registry.Reference, digest string) (*Node, error) {
	if w.MaxDepth <= 0 {
		w.MaxDepth = 10
	}
	root := &Node{Kind: KindModel, Ref: ref.Registry + "/" + ref.Repository + "@" + digest, Digest: digest}
	return root, w.up(ctx, root, ref, []string{root.Ref}, 0)
}

func (w *Walker) up(ctx context.Context, n *Node, ref registry.Reference, path []string, depth int) error {
	if depth >= w.MaxDepth {
		n.Note = fmt.Sprintf("depth limit %d reached", w.MaxDepth)
		return nil
	}
	repo, err := w.Open(ref)
	if err != nil {
		return err
	}
	desc, err := repo.Resolve(ctx, n.Digest)
	if err != nil {
		n.Note = "not found: " + n.tried + remote.Explain(err, n.Ref).Error()
		return nil
	}
	sources, err := Gather(ctx, repo, desc, w.Trusted)
	if err != nil {
		return err
	}
	seen := map[string]*Node{}
	for _, s := range sources {
		if s.Problem != "" && !s.Signed && s.Kind == "record" {
			continue
		}
		for _, in := range s.Predicate.Inputs {
			id := in.Kind + " " + in.URI + " " + in.Revision
			if c, ok := seen[id]; ok {
				c.Signed = c.Signed || s.Signed
				continue
			}
			c := &Node{Kind: in.Kind, Ref: in.URI, Revision: in.Revision, Signed: s.Signed}
			if h := in.Digest["sha256"]; h != "" {
				c.Digest = "sha256:" + h
			}
			seen[id] = c
			n.Children = append(n.Children, c)
		}
		if r := s.Predicate.Run; r != nil {
			ref := strings.TrimSpace(r.URL + " " + r.ID)
			if c, ok := seen["run "+ref]; ok {
				c.Signed = c.Signed || s.Signed
			} else {
				c := &Node{Kind: "run", Ref: ref, Signed: s.Signed}
				seen["run "+ref] = c
				n.Children = append(n.Children, c)
			}
		}
	}
	slices.SortFunc(n.Children, func(a, b *Node) int { return strings.Compare(a.Kind+a.Ref, b.Kind+b.Ref) })
	for _, c := range n.Children {
		if c.Kind != KindModel {
			continue
		}
		if slices.Contains(path, c.Ref) {
			c.Note = "cycle: " + strings.Join(append(slices.Clone(path), c.Ref), " -> ")
			continue
		}
		pref, err := remote.ParseReference(c.Ref)
		if err != nil {
			c.Note = "not an OCI reference"
			continue
		}
		if c.Digest == "" {
			c.Digest = pref.Reference
		}
		pref.Reference = ""
		if err := w.up(ctx, c, w.locate(ctx, c, pref), append(slices.Clone(path), c.Ref), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// locate picks where to read the model n, recorded at ref: in Home when
// it holds the digest (same repository path first, then Locate), else at
// ref's own host. Only a digest can be looked for elsewhere: a model
// recorded by tag is read where it was recorded.
func (w *Walker) locate(ctx context.Context, n *Node, ref registry.Reference) registry.Reference {
	if w.Home == "" || ref.Registry == w.Home || !strings.HasPrefix(n.Digest, "sha256:") {
		return ref
	}
	local := registry.Reference{Registry: w.Home, Repository: ref.Repository}
	if repo, err := w.Open(local); err == nil {
		if _, err := repo.Resolve(ctx, n.Digest); err == nil {
			n.At = local.Registry + "/" + local.Repository
			return local
		}
	}
	tried := local.Registry + "/" + local.Repository
	if w.Locate != nil {
		if r, err := w.Locate(ctx, n.Digest); err == nil && r != "" {
			local.Repository = r
			n.At = local.Registry + "/" + local.Repository
			return local
		}
		tried += " or anywhere in " + w.Home
	}
	n.tried = "not in " + tried + "; at the recorded host: "
	return ref
}

// Edges lists a graph's edges as (input, model) pairs, each once.
func (n *Node) edges(yield func(from, to *Node)) {
	for _, c := range n.Children {
		yield(c, n)
		c.edges(yield)
	}
}

func (n *Node) label() string {
	s := n.Kind + " " + n.Ref
	if n.Revision != "" {
		s += " @" + n.Revision
	}
	if n.Digest != "" && !strings.Contains(n.Ref, n.Digest) {
		s += " " + n.Digest
	}
	return s
}

// WriteTree prints the graph as an indented tree.
func (n *Node) WriteTree(w io.Writer) {
	fmt.Fprintln(w, n.line())
	n.writeChildren(w, "")
}

func (n *Node) line() string {
	s := n.label()
	if n.Signed {
		s += " [signed]"
	}
	if n.At != "" {
		s += " [at " + n.At + "]"
	}
	if n.Note != "" {
		s += " (" + n.Note + ")"
	}
	return s
}

func (n *Node) writeChildren(w io.Writer, prefix string) {
	for i, c := range n.Children {
		branch, next := "├── ", "│   "
		if i == len(n.Children)-1 {
			branch, next = "└── ", "    "
		}
		fmt.Fprintln(w, prefix+branch+c.line())
		c.writeChildren(w, prefix+next)
	}
}

// WriteDot prints the graph in Graphviz dot: an edge from each input to
// the model made from it.
func (n *Node) WriteDot(w io.Writer) {
	fmt.Fprintln(w, "digraph lineage {\n  rankdir=BT;")
	seen := map[string]bool{}
	n.edges(func(from, to *Node) {
		line := fmt.Sprintf("  %q -> %q;", from.label(), to.label())
		if !seen[line] {
			seen[line] = true
			fmt.Fprintln(w, line)
		}
	})
	fmt.Fprintln(w, "}")
}

// WriteMermaid prints the graph as a Mermaid flowchart.
func (n *Node) WriteMermaid(w io.Writer) {
	fmt.Fprintln(w, "graph BT")
	ids := map[string]string{}
	id := func(x *Node) string {
		l := x.label()
		if v, ok := ids[l]; ok {
			return v
		}
		v := fmt.Sprintf("n%d", len(ids))
		ids[l] = v
		fmt.Fprintf(w, "  %s[%q]\n", v, strings.ReplaceAll(l, `"`, "'"))
		return v
	}
	id(n)
	seen := map[string]bool{}
	n.edges(func(from, to *Node) {
		line := fmt.Sprintf("  %s --> %s", id(from), id(to))
		if !seen[line] {
			seen[line] = true
			fmt.Fprintln(w, line)
		}
	})
}

// Down walks descendants: the versions made from root (a model's digest or
// a dataset URI), then the versions made from those, and so on. children
// looks them up (modelreg serve's lineage index); it returns model nodes.
func Down(ctx context.Context, root *Node, children func(ctx context.Context, of string) ([]*Node, error), maxDepth int) error {
	if maxDepth <= 0 {
		maxDepth = 10
	}
	var walk func(n *Node, path []string, depth int) error
	walk = func(n *Node, path []string, depth int) error {
		if depth >= maxDepth {
			n.Note = fmt.Sprintf("depth limit %d reached", maxDepth)
			return nil
		}
		of := n.Digest
		if of == "" {
			of = n.Ref
		}
		kids, err := children(ctx, of)
		if err != nil {
			return err
		}
		n.Children = kids
		for _, c := range kids {
			if slices.Contains(path, c.Ref) {
				c.Note = "cycle: " + strings.Join(append(slices.Clone(path), c.Ref), " -> ")
				continue
			}
			if err := walk(c, append(slices.Clone(path), c.Ref), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(root, []string{root.Ref}, 0)
}
