package index

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/modelreg/modelreg/pkg/query"
)

// VersionRow is one model version as the model API returns it.
type VersionRow struct {
	Repository  string             `json:"repository"`
	Digest      string             `json:"digest"`
	Versions    []string           `json:"versions"`
	Stages      []string           `json:"stages"`
	Created     string             `json:"created,omitempty"`
	Framework   string             `json:"framework,omitempty"`
	Description string             `json:"description,omitempty"`
	Size        int64              `json:"size"`
	Files       int                `json:"files"`
	Metrics     map[string]float64 `json:"metrics"`
	Params      map[string]string  `json:"params"`
	Labels      map[string]string  `json:"labels"`
}

// SearchOptions is a search: a parsed query (nil matches all), an order
// and a page.
type SearchOptions struct {
	Query   query.Node
	OrderBy string // "created desc" (default), "metrics.NAME asc", "repository", "version", "framework"
	Limit   int
	Offset  int
}

// sqlOps maps query operators to SQL: only these strings reach the SQL text.
var sqlOps = map[string]string{"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

// compile turns a query into a SQL condition over versions v; every value
// becomes a bound parameter.
func compile(n query.Node, args *[]any) (string, error) {
	switch n := n.(type) {
	case nil:
		return "1", nil
	case query.And:
		return binary(n.L, n.R, "AND", args)
	case query.Or:
		return binary(n.L, n.R, "OR", args)
	case query.Not:
		x, err := compile(n.X, args)
		return "NOT (" + x + ")", err
	case query.Cmp:
		return compileCmp(n, args)
	}
	return "", fmt.Errorf("unknown query node %T", n)
}

func binary(l, r query.Node, op string, args *[]any) (string, error) {
	a, err := compile(l, args)
	if err != nil {
		return "", err
	}
	b, err := compile(r, args)
	return "(" + a + " " + op + " " + b + ")", err
}

// test renders "<col> <op> <values>" for one comparison.
func test(col string, c query.Cmp, args *[]any) (string, error) {
	val := func(v query.Value) any {
		if c.Field == "metrics" {
			return v.Num
		}
		return v.Str
	}
	switch c.Op {
	case "in":
		marks := make([]string, len(c.Vals))
		for i, v := range c.Vals {
			marks[i] = "?"
			*args = append(*args, val(v))
		}
		return col + " IN (" + strings.Join(marks, ", ") + ")", nil
	case "like":
		*args = append(*args, c.Vals[0].Str)
		return col + " LIKE ?", nil
	}
	op, ok := sqlOps[c.Op]
	if !ok {
		return "", &query.Error{Pos: c.Pos, Msg: "unknown operator " + c.Op}
	}
	*args = append(*args, val(c.Vals[0]))
	return col + " " + op + " ?", nil
}

func compileCmp(c query.Cmp, args *[]any) (string, error) {
	switch c.Field {
	case "metrics":
		*args = append(*args, c.Key)
		t, err := test("m.value", c, args)
		return "EXISTS (SELECT 1 FROM version_metrics m WHERE m.repo = v.repo AND m.digest = v.digest AND m.key = ? AND " + t + ")", err
	case "params", "labels":
		*args = append(*args, c.Field, c.Key)
		t, err := test("p.value", c, args)
		return "EXISTS (SELECT 1 FROM version_props p WHERE p.repo = v.repo AND p.digest = v.digest AND p.kind = ? AND p.key = ? AND " + t + ")", err
	case "stage", "version":
		kind := c.Field
		if c.Op == "!=" { // "not in that stage"
			eq := c
			eq.Op = "="
			inner, err := compileCmp(eq, args)
			return "NOT " + inner, err
		}
		if c.Field == "stage" && c.Op != "=" && c.Op != "in" && c.Op != "like" {
			return "", &query.Error{Pos: c.Pos, Msg: "stage supports =, !=, in and like"}
		}
		*args = append(*args, kind)
		t, err := test("t.tag", c, args)
		return "EXISTS (SELECT 1 FROM tags t WHERE t.repo = v.repo AND t.digest = v.digest AND t.kind = ? AND " + t + ")", err
	case "repository":
		return test("v.repo", c, args)
	case "digest", "framework", "description", "created":
		return test("v."+c.Field, c, args)
	}
	return "", &query.Error{Pos: c.Pos, Msg: "unknown field " + c.Field}
}

// orderBy turns "metrics.accuracy desc" into SQL with bound names.
func orderBy(spec string, args *[]any) (string, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		spec = "created desc"
	}
	field, dir, _ := strings.Cut(spec, " ")
	switch strings.ToLower(strings.TrimSpace(dir)) {
	case "", "asc":
		dir = "ASC"
	case "desc":
		dir = "DESC"
	default:
		return "", fmt.Errorf("order_by %q: the direction is asc or desc", spec)
	}
	var col string
	switch {
	case strings.HasPrefix(field, "metrics.") && len(field) > len("metrics."):
		*args = append(*args, strings.TrimPrefix(field, "metrics."))
		col = "(SELECT value FROM version_metrics m WHERE m.repo = v.repo AND m.digest = v.digest AND m.key = ?)"
	case field == "created", field == "framework", field == "repository", field == "version":
		col = map[string]string{"created": "v.created", "framework": "v.framework", "repository": "v.repo",
			"version": "(SELECT MAX(tag) FROM tags t WHERE t.repo = v.repo AND t.digest = v.digest AND t.kind = 'version')"}[field]
	default:
		return "", fmt.Errorf("order_by %q: order by created, framework, repository, version or metrics.NAME", spec)
	}
	return col + " " + dir + " NULLS LAST, v.repo, v.digest", nil
}

// Search returns the versions matching opts, with their tags and metadata.
func (x *Index) Search(ctx context.Context, opts SearchOptions) ([]VersionRow, error) {
	var args []any
	where, err := compile(opts.Query, &args)
	if err != nil {
		return nil, err
	}
	order, err := orderBy(opts.OrderBy, &args)
	if err != nil {
		return nil, err
	}
	if opts.Limit <= 0 || opts.Limit > 1000 {
		opts.Limit = 100
	}
	args = append(args, opts.Limit, max(opts.Offset, 0))
	rows, err := x.db.QueryContext(ctx, `SELECT v.repo, v.digest, v.created, v.framework, v.description, v.size, v.files
		FROM versions v WHERE `+where+` ORDER BY `+order+` LIMIT ? OFFSET ?`, args...)
	if err != nil {
		return nil, err
	}
	out := []VersionRow{}
	for rows.Next() {
		var r VersionRow
		if err := rows.Scan(&r.Repository, &r.Digest, &r.Created, &r.Framework, &r.Description, &r.Size, &r.Files); err != nil {
			rows.Close()
			return nil, err
		}
		r.Versions, r.Stages = []string{}, []string{}
		r.Metrics, r.Params, r.Labels = map[string]float64{}, map[string]string{}, map[string]string{}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, x.fill(ctx, out)
}

// fill adds tags, metrics, params and labels to rows, in three queries.
func (x *Index) fill(ctx context.Context, rows []VersionRow) error {
	if len(rows) == 0 {
		return nil
	}
	at := map[string]*VersionRow{}
	marks := make([]string, len(rows))
	var keys []any
	for i := range rows {
		at[rows[i].Repository+"@"+rows[i].Digest] = &rows[i]
		marks[i] = "(?, ?)"
		keys = append(keys, rows[i].Repository, rows[i].Digest)
	}
	in := "(repo, digest) IN (VALUES " + strings.Join(marks, ", ") + ")"
	tq, err := x.db.QueryContext(ctx, `SELECT repo, digest, tag, kind FROM tags WHERE `+in+` ORDER BY tag`, keys...)
	if err != nil {
		return err
	}
	for tq.Next() {
		var repo, dg, t, kind string
		if err := tq.Scan(&repo, &dg, &t, &kind); err != nil {
			tq.Close()
			return err
		}
		r := at[repo+"@"+dg]
		switch kind {
		case "version":
			r.Versions = append(r.Versions, t)
		case "stage":
			r.Stages = append(r.Stages, t)
		}
	}
	tq.Close()
	mq, err := x.db.QueryContext(ctx, `SELECT repo, digest, key, value FROM version_metrics WHERE `+in, keys...)
	if err != nil {
		return err
	}
	for mq.Next() {
		var repo, dg, k string
		var v float64
		if err := mq.Scan(&repo, &dg, &k, &v); err != nil {
			mq.Close()
			return err
		}
		at[repo+"@"+dg].Metrics[k] = v
	}
	mq.Close()
	pq, err := x.db.QueryContext(ctx, `SELECT repo, digest, kind, key, value FROM version_props WHERE `+in, keys...)
	if err != nil {
		return err
	}
	defer pq.Close()
	for pq.Next() {
		var repo, dg, kind, k, v string
		if err := pq.Scan(&repo, &dg, &kind, &k, &v); err != nil {
			return err
		}
		r := at[repo+"@"+dg]
		if kind == "params" {
			r.Params[k] = v
		} else {
			r.Labels[k] = v
		}
	}
	return pq.Err()
}

// ModelRow summarizes one model repository.
type ModelRow struct {
	Repository string            `json:"repository"`
	Versions   int               `json:"versions"`
	Stages     map[string]string `json:"stages"`
	Latest     string            `json:"latest,omitempty"`
}

// Models lists model repositories by name, after the name after.
func (x *Index) Models(ctx context.Context, after string, limit int) ([]ModelRow, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	rows, err := x.db.QueryContext(ctx, `SELECT repo, COUNT(*), MAX(created) FROM versions WHERE repo > ? GROUP BY repo ORDER BY repo LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	out := []ModelRow{}
	for rows.Next() {
		var m ModelRow
		if err := rows.Scan(&m.Repository, &m.Versions, &m.Latest); err != nil {
			rows.Close()
			return nil, err
		}
		m.Stages = map[string]string{}
		out = append(out, m)
	}
	rows.Close()
	for i := range out {
		sq, err := x.db.QueryContext(ctx, `SELECT tag, digest FROM tags WHERE repo = ? AND kind = 'stage' AND digest IN (SELECT digest FROM versions WHERE repo = ?)`, out[i].Repository, out[i].Repository)
		if err != nil {
			return nil, err
		}
		for sq.Next() {
			var t, d string
			if err := sq.Scan(&t, &d); err != nil {
				sq.Close()
				return nil, err
			}
			out[i].Stages[t] = d
		}
		sq.Close()
	}
	return out, nil
}

// History returns the promotion records of a stage, newest first, as the
// records' JSON.
func (x *Index) History(ctx context.Context, repo, stage string) ([]json.RawMessage, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT body FROM promotions WHERE repo = ? AND stage = ? ORDER BY time DESC, record DESC`, repo, stage)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []json.RawMessage{}
	for rows.Next() {
		var b string
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, json.RawMessage(b))
	}
	return out, rows.Err()
}
