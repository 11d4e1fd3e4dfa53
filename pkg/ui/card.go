package ui

import (
	"bytes"
	"html/template"
	"path"
	"strings"

	"github.com/microcosm-cc/bluemonday"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
)

// MaxCard bounds the model card read and rendered (a README larger than
// this is shown truncated to it).
const MaxCard = 256 << 10

// CardFile says whether a version's file is its model card: README or
// MODEL_CARD (any case, .md or none) at the top of the tree, README first.
func CardFile(p string) (rank int, ok bool) {
	if strings.Contains(p, "/") {
		return 0, false
	}
	base := strings.ToUpper(strings.TrimSuffix(p, path.Ext(p)))
	if ext := strings.ToLower(path.Ext(p)); ext != "" && ext != ".md" && ext != ".markdown" {
		return 0, false
	}
	switch base {
	case "MODEL_CARD", "MODELCARD":
		return 1, true
	case "README":
		return 2, true
	}
	return 0, false
}

var (
	markdown = goldmark.New(goldmark.WithExtensions(extension.GFM))
	// sanitize keeps what Markdown makes (headings, lists, tables, code,
	// links, images by URL) and drops every script, handler and style.
	sanitize = bluemonday.UGCPolicy()
)

// Card renders a model card's Markdown as sanitized HTML: whoever pushed
// the README wrote it, and it must not run in a reviewer's browser.
func Card(src []byte) template.HTML {
	if len(src) > MaxCard {
		src = src[:MaxCard]
	}
	var out bytes.Buffer
	if err := markdown.Convert(src, &out); err != nil {
		return template.HTML(template.HTMLEscapeString(string(src)))
	}
	return template.HTML(sanitize.SanitizeBytes(out.Bytes())) // #nosec: sanitized just above
}
