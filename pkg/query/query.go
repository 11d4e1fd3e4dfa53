// Package query is modelreg's search language over model versions, at
// least as expressive as Kubeflow Model Registry's filterQuery:
//
//	metrics.accuracy >= 0.9 and (stage = 'production' or labels.team in ('fraud', 'risk'))
//	and not framework = 'sklearn' and repository like 'team/%'
//
// Fields: metrics.<name> (numbers), params.<name>, labels.<name>,
// framework, description, created (RFC 3339), stage, version, repository,
// digest. Operators: = != < <= > >=, like (SQL % and _ wildcards), in
// (list). Combinators: and, or, not, parentheses; keywords are
// case-insensitive. Compile turns a query into a SQL condition whose values
// are always bound parameters: user text never becomes SQL.
package query

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Error is a syntax error with the byte offset where it was found.
type Error struct {
	Pos int
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("query error at position %d: %s", e.Pos, e.Msg) }

// Node is a parsed query.
type Node interface{ node() }

// And, Or and Not combine conditions.
type (
	And struct{ L, R Node }
	Or  struct{ L, R Node }
	Not struct{ X Node }
)

// Cmp compares a field with one or more values.
type Cmp struct {
	Field string // "metrics", "params", "labels", or a plain field name
	Key   string // the metric, param or label name
	Op    string // = != < <= > >= like in
	Vals  []Value
	Pos   int
}

// Value is a literal: a number or a string.
type Value struct {
	Num   float64
	Str   string
	IsNum bool
}

func (And) node() {}
func (Or) node()  {}
func (Not) node() {}
func (Cmp) node() {}

// WeightFields are the names of the weights.NAME field: what the header
// of the version's safetensors and GGUF files says (pkg/weights). true
// marks the numeric ones.
var WeightFields = map[string]bool{"parameters": true, "tensors": true, "context_length": true,
	"format": false, "architecture": false, "quantization": false, "dtype": false}

// Plain fields and the column or relation each maps to.
var plainFields = map[string]bool{"framework": true, "description": true, "created": true, "stage": true, "version": true, "repository": true, "digest": true}

type tok struct {
	kind string // ident, num, str, op, (, ), ",", eof
	text string
	pos  int
}

type lexer struct {
	src  string
	toks []tok
}

func lex(src string) ([]tok, error) {
	var toks []tok
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == ',':
			toks = append(toks, tok{string(c), string(c), i})
			i++
		case c == '\'' || c == '"':
			start := i
			var b strings.Builder
			i++
			for {
				if i >= len(src) {
					return nil, &Error{start, "unterminated string"}
				}
				if src[i] == c {
					if i+1 < len(src) && src[i+1] == c { // '' escapes a quote
						b.WriteByte(c)
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(src[i])
				i++
			}
			toks = append(toks, tok{"str", b.String(), start})
		case strings.ContainsRune("=!<>", rune(c)):
			start := i
			op := string(c)
			if c != '=' && i+1 < len(src) && src[i+1] == '=' {
				op += "="
			}
			if op == "!" {
				return nil, &Error{start, "'!' must be followed by '=' (use 'not' to negate)"}
			}
			i += len(op)
			toks = append(toks, tok{"op", op, start})
		case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9'):
			start := i
			i++
			for i < len(src) && (isDigit(src[i]) || strings.ContainsRune(".eE+-", rune(src[i]))) {
				if (src[i] == '+' || src[i] == '-') && !(src[i-1] == 'e' || src[i-1] == 'E') {
					break
				}
				i++
			}
			text := src[start:i]
			if _, err := strconv.ParseFloat(text, 64); err != nil {
				return nil, &Error{start, fmt.Sprintf("%q is not a number", text)}
			}
			toks = append(toks, tok{"num", text, start})
		case isIdentStart(c):
			start := i
			for i < len(src) && (isIdentStart(src[i]) || isDigit(src[i]) || src[i] == '.' || src[i] == '-') {
				i++
			}
			toks = append(toks, tok{"ident", src[start:i], start})
		default:
			r := []rune(src[i:])[0]
			if unicode.IsPrint(r) {
				return nil, &Error{i, fmt.Sprintf("unexpected character %q", r)}
			}
			return nil, &Error{i, "unexpected character"}
		}
	}
	return append(toks, tok{"eof", "", len(src)}), nil
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

type parser struct {
	toks []tok
	i    int
}

func (p *parser) peek() tok { return p.toks[p.i] }
func (p *parser) next() tok { t := p.toks[p.i]; p.i++; return t }

func (p *parser) keyword(k string) bool {
	t := p.peek()
	if t.kind == "ident" && strings.EqualFold(t.text, k) {
		p.i++
		return true
	}
	return false
}

// maxDepth bounds nesting, so a hostile query cannot exhaust the stack.
const maxDepth = 64

// Parse parses a query. The empty query matches everything (nil, nil).
func Parse(src string) (Node, error) {
	if len(src) > 4096 {
		return nil, &Error{4096, "query longer than 4096 bytes"}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	if p.peek().kind == "eof" {
		return nil, nil
	}
	n, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != "eof" {
		return nil, &Error{t.pos, fmt.Sprintf("unexpected %q: expected 'and', 'or' or the end of the query", t.text)}
	}
	return n, nil
}

func (p *parser) or(depth int) (Node, error) {
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = Or{l, r}
	}
	return l, nil
}

func (p *parser) and(depth int) (Node, error) {
	l, err := p.not(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		r, err := p.not(depth)
		if err != nil {
			return nil, err
		}
		l = And{l, r}
	}
	return l, nil
}

func (p *parser) not(depth int) (Node, error) {
	if depth > maxDepth {
		return nil, &Error{p.peek().pos, "query nested too deeply"}
	}
	if p.keyword("not") {
		x, err := p.not(depth + 1)
		if err != nil {
			return nil, err
		}
		return Not{x}, nil
	}
	return p.primary(depth)
}

func (p *parser) primary(depth int) (Node, error) {
	t := p.peek()
	if t.kind == "(" {
		p.next()
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != ")" {
			return nil, &Error{c.pos, fmt.Sprintf("expected ')' to close the '(' at position %d", t.pos)}
		}
		return n, nil
	}
	return p.comparison()
}

func (p *parser) comparison() (Node, error) {
	t := p.next()
	if t.kind != "ident" {
		return nil, &Error{t.pos, fmt.Sprintf("expected a field (metrics.NAME, params.NAME, labels.NAME, weights.NAME, framework, created, stage, version, repository), found %q", t.text)}
	}
	c := Cmp{Pos: t.pos}
	field := strings.ToLower(t.text)
	if prefix, key, ok := strings.Cut(t.text, "."); ok {
		switch strings.ToLower(prefix) {
		case "metrics", "params", "labels":
			if key == "" {
				return nil, &Error{t.pos, fmt.Sprintf("%q needs a name after the dot", t.text)}
			}
			c.Field, c.Key = strings.ToLower(prefix), key
		case "weights":
			k := strings.ToLower(key)
			if _, ok := WeightFields[k]; !ok {
				return nil, &Error{t.pos, fmt.Sprintf("unknown field %q: weights has parameters, tensors, context_length, format, architecture, quantization and dtype", t.text)}
			}
			c.Field, c.Key = "weights", k
		default:
			return nil, &Error{t.pos, fmt.Sprintf("unknown field %q", t.text)}
		}
	} else if plainFields[field] {
		c.Field = field
	} else {
		return nil, &Error{t.pos, fmt.Sprintf("unknown field %q", t.text)}
	}

	op := p.next()
	switch {
	case op.kind == "op":
		c.Op = op.text
	case op.kind == "ident" && strings.EqualFold(op.text, "like"):
		c.Op = "like"
	case op.kind == "ident" && strings.EqualFold(op.text, "in"):
		c.Op = "in"
	default:
		return nil, &Error{op.pos, fmt.Sprintf("expected an operator (= != < <= > >= like in) after %s, found %q", t.text, op.text)}
	}
	if c.Op == "in" {
		if o := p.next(); o.kind != "(" {
			return nil, &Error{o.pos, "expected '(' after in"}
		}
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			c.Vals = append(c.Vals, v)
			sep := p.next()
			if sep.kind == ")" {
				break
			}
			if sep.kind != "," {
				return nil, &Error{sep.pos, "expected ',' or ')' in the in list"}
			}
		}
	} else {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		c.Vals = []Value{v}
	}
	numeric := c.Field == "weights" && WeightFields[c.Key]
	for _, v := range c.Vals {
		if c.Field == "metrics" && !v.IsNum {
			return nil, &Error{c.Pos, fmt.Sprintf("metrics.%s is numeric: compare it with a number", c.Key)}
		}
		if numeric && !v.IsNum {
			return nil, &Error{c.Pos, fmt.Sprintf("weights.%s is numeric: compare it with a number, e.g. weights.%s > 7e9", c.Key, c.Key)}
		}
		if c.Field == "weights" && !numeric && v.IsNum {
			return nil, &Error{c.Pos, fmt.Sprintf("weights.%s is text: compare it with a quoted string", c.Key)}
		}
		if c.Op == "like" && v.IsNum {
			return nil, &Error{c.Pos, "like needs a quoted pattern, e.g. 'team/%'"}
		}
	}
	if (c.Field == "metrics" || numeric) && c.Op == "like" {
		return nil, &Error{c.Pos, "like does not apply to numbers"}
	}
	return c, nil
}

func (p *parser) value() (Value, error) {
	t := p.next()
	switch t.kind {
	case "num":
		f, _ := strconv.ParseFloat(t.text, 64)
		return Value{Num: f, IsNum: true, Str: t.text}, nil
	case "str":
		return Value{Str: t.text}, nil
	}
	return Value{}, &Error{t.pos, fmt.Sprintf("expected a value (a number or a 'quoted string'), found %q", t.text)}
}
