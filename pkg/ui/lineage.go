package ui

import (
	"strings"

	"github.com/modelreg/modelreg/pkg/wire"
)

// Graph is a version's lineage as a picture: its inputs on the left (the
// datasets, code and base models it was made from), the version in the
// middle, its descendants (versions made from it) on the right; each
// model node links to its page. Positions are computed here, so the page
// draws it as plain SVG, with no script.
type Graph struct {
	Width, Height int
	Center        Node
	Nodes         []Node
	Edges         []Line
}

// Node is one box of the picture.
type Node struct {
	X, Y        int
	Label, Kind string
	Href        string
}

// Line joins two boxes.
type Line struct{ X1, Y1, X2, Y2 int }

const (
	nodeW, nodeH, gapY, colX = 220, 36, 14, 290
)

// Lineage lays out a version's inputs and descendants around it.
func Lineage(repo, digest, label string, inputs, descendants []wire.Edge) *Graph {
	if len(inputs) == 0 && len(descendants) == 0 {
		return nil
	}
	rows := max(len(inputs), len(descendants), 1)
	g := &Graph{Width: 2*colX + nodeW + 20, Height: rows*(nodeH+gapY) + gapY}
	y := func(i, n int) int {
		top := (g.Height - n*(nodeH+gapY) + gapY) / 2
		return top + i*(nodeH+gapY)
	}
	g.Center = Node{X: colX + 10, Y: y(0, 1), Label: label, Kind: "this version", Href: "/models/" + repo + "/versions/" + digest}
	for i, e := range inputs {
		n := Node{X: 10, Y: y(i, len(inputs)), Kind: e.Kind, Label: e.URI}
		if r := InputRepo(e); r != "" {
			n.Label = r + "@" + short(e.InputDigest)
			n.Href = "/models/" + r + "/versions/" + e.InputDigest
		}
		g.Nodes = append(g.Nodes, n)
		g.Edges = append(g.Edges, Line{n.X + nodeW, n.Y + nodeH/2, g.Center.X, g.Center.Y + nodeH/2})
	}
	for i, e := range descendants {
		n := Node{X: 2*colX + 10, Y: y(i, len(descendants)), Kind: "made from it", Label: e.Repo + "@" + short(e.Digest), Href: "/models/" + e.Repo + "/versions/" + e.Digest}
		g.Nodes = append(g.Nodes, n)
		g.Edges = append(g.Edges, Line{g.Center.X + nodeW, g.Center.Y + nodeH/2, n.X, n.Y + nodeH/2})
	}
	return g
}

func short(d string) string {
	if len(d) > 19 {
		return d[7:19]
	}
	return d
}

// Clip shortens a label to what fits a box.
func Clip(s string) string {
	if len(s) > 34 {
		return s[:16] + "…" + s[len(s)-16:]
	}
	return s
}

// InputRepo is the repository of a model input named by its reference
// (REGISTRY/REPO@DIGEST or :TAG), for a link to its page on this registry;
// "" for other inputs (datasets, code) or a model without a digest.
func InputRepo(e wire.Edge) string {
	if e.Kind != "model" || e.InputDigest == "" {
		return ""
	}
	ref := e.URI
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	host, rest, ok := strings.Cut(ref, "/")
	if !ok {
		return ""
	}
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		rest = ref // no registry host in the reference
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		rest = rest[:i]
	}
	return rest
}
