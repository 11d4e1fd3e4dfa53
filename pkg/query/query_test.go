package query

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseShapes(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "<nil>"},
		{"metrics.accuracy >= 0.9", "metrics.accuracy >= [0.9]"},
		{"stage = 'production'", "stage = ['production']"},
		{`labels.team in ('fraud', "risk")`, "labels.team in ['fraud' 'risk']"},
		{"a.b", ""}, // an unknown field: see TestParseErrors
		{"metrics.acc > 1 AND NOT framework = 'sklearn'", "(metrics.acc > [1] and not framework = ['sklearn'])"},
		{"metrics.a > 1 or metrics.b > 2 and metrics.c > 3", "(metrics.a > [1] or (metrics.b > [2] and metrics.c > [3]))"},
		{"(metrics.a > 1 or metrics.b > 2) and metrics.c > 3", "((metrics.a > [1] or metrics.b > [2]) and metrics.c > [3])"},
		{"repository like 'team/%'", "repository like ['team/%']"},
		{"description = 'it''s'", "description = ['it's']"},
		{"metrics.loss < -1e-3", "metrics.loss < [-0.001]"},
	} {
		n, err := Parse(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", c.in, show(n))
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got := show(n); got != c.want {
			t.Errorf("Parse(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// show prints a parsed query with its grouping explicit.
func show(n Node) string {
	switch n := n.(type) {
	case nil:
		return "<nil>"
	case And:
		return "(" + show(n.L) + " and " + show(n.R) + ")"
	case Or:
		return "(" + show(n.L) + " or " + show(n.R) + ")"
	case Not:
		return "not " + show(n.X)
	case Cmp:
		f := n.Field
		if n.Key != "" {
			f += "." + n.Key
		}
		var vs []string
		for _, v := range n.Vals {
			if v.IsNum {
				vs = append(vs, strconv.FormatFloat(v.Num, 'g', -1, 64))
			} else {
				vs = append(vs, "'"+v.Str+"'")
			}
		}
		return f + " " + n.Op + " [" + strings.Join(vs, " ") + "]"
	}
	return "?"
}

// Each error names its position, so a UI can point at it.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		in   string
		pos  int
		want string
	}{
		{"metrics.accuracy >= ", 20, "expected a value"},
		{"metrics.accuracy >= 'high'", 0, "numeric"},
		{"bogus = 1", 0, "unknown field"},
		{"metrics. > 1", 0, "needs a name"},
		{"stage = 'production' stage", 21, "expected 'and', 'or'"},
		{"(stage = 'x'", 12, "expected ')' to close the '(' at position 0"},
		{"stage ~ 'x'", 6, ""},
		{"labels.team in 'x'", 15, "expected '('"},
		{"metrics.a like 'x%'", 0, "numeric"},
		{"repository like 1", 0, "quoted pattern"},
		{"stage = 'unterminated", 8, ""},
		{strings.Repeat("(", 200) + "stage = 'x'" + strings.Repeat(")", 200), -1, "nested too deeply"},
		{strings.Repeat("x", 5000), 4096, "longer than 4096"},
	} {
		_, err := Parse(c.in)
		var qe *Error
		if !errors.As(err, &qe) {
			t.Errorf("Parse(%q) = %v, want a *query.Error", c.in, err)
			continue
		}
		if c.pos >= 0 && qe.Pos != c.pos {
			t.Errorf("Parse(%q): error at %d (%s), want %d", c.in, qe.Pos, qe.Msg, c.pos)
		}
		if !strings.Contains(qe.Msg, c.want) {
			t.Errorf("Parse(%q): %q does not say %q", c.in, qe.Msg, c.want)
		}
	}
}

// FuzzParse: no input panics, and every error is a positioned *Error
// inside the input.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"metrics.a >= 0.9 and (stage = 'p' or labels.t in ('a','b'))", "not framework = 'x'", "repository like 'a%'", "((", "'", "metrics.", "1e400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := Parse(s)
		if err == nil {
			return
		}
		var qe *Error
		if !errors.As(err, &qe) {
			t.Fatalf("Parse(%q) = %v, not a *query.Error", s, err)
		}
		if qe.Pos < 0 || qe.Pos > len(s) && len(s) <= 4096 {
			t.Fatalf("Parse(%q): position %d outside the input", s, qe.Pos)
		}
	})
}
