package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/modelreg/modelreg/pkg/query"
	"github.com/modelreg/modelreg/pkg/wire"
)

// VersionRow is one model version as the model API returns it.
type VersionRow = wire.VersionRow

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

// compile turns a query into a SQL query yielding the (repo, digest) of
// matching versions. Each comparison becomes an index range scan over the
// table that holds its field; and, or and not become INTERSECT, UNION and
// EXCEPT of those sets, so the cost follows how many versions match, not
// how many exist. Every value is a bound parameter.
func (d dialect) compile(n query.Node, args *[]any) (string, error) {
	switch n := n.(type) {
	case query.And:
		return d.compound(n.L, n.R, "INTERSECT", args)
	case query.Or:
		return d.compound(n.L, n.R, "UNION", args)
	case query.Not:
		x, err := d.compile(n.X, args)
		return "SELECT repo, digest FROM versions EXCEPT SELECT repo, digest FROM (" + x + ") q", err
	case query.Cmp:
		return d.compileCmp(n, args)
	}
	return "", fmt.Errorf("unknown query node %T", n)
}

func (d dialect) compound(l, r query.Node, op string, args *[]any) (string, error) {
	a, err := d.compile(l, args)
	if err != nil {
		return "", err
	}
	b, err := d.compile(r, args)
	return "SELECT repo, digest FROM (" + a + ") q " + op + " SELECT repo, digest FROM (" + b + ") q", err
}

// test renders "<col> <op> <values>" for one comparison.
func (d dialect) test(col string, c query.Cmp, args *[]any) (string, error) {
	val := func(v query.Value) any {
		if c.Field == "metrics" || (c.Field == "weights" && query.WeightFields[c.Key]) {
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
		pat := c.Vals[0].Str
		if prefix, ok := strings.CutSuffix(pat, "%"); ok && prefix != "" && !strings.ContainsAny(prefix, "%_") {
			// A prefix pattern is an index range: [prefix, prefix+1).
			end := []byte(prefix)
			end[len(end)-1]++
			if end[len(end)-1] != 0 {
				*args = append(*args, prefix, string(end))
				return col + " >= ? AND " + col + " < ?", nil
			}
		}
		cond, arg := d.like(col, pat)
		*args = append(*args, arg)
		return cond, nil
	}
	op, ok := sqlOps[c.Op]
	if !ok {
		return "", &query.Error{Pos: c.Pos, Msg: "unknown operator " + c.Op}
	}
	*args = append(*args, val(c.Vals[0]))
	return col + " " + op + " ?", nil
}

func (d dialect) compileCmp(c query.Cmp, args *[]any) (string, error) {
	switch c.Field {
	case "metrics":
		*args = append(*args, c.Key)
		t, err := d.test("value", c, args)
		return "SELECT repo, digest FROM version_metrics WHERE key = ? AND " + t, err
	case "params", "labels":
		*args = append(*args, c.Field, c.Key)
		t, err := d.test("value", c, args)
		return "SELECT repo, digest FROM version_props WHERE kind = ? AND key = ? AND " + t, err
	case "weights":
		*args = append(*args, c.Key)
		t, err := d.test(weightColumn(c.Key), c, args)
		return "SELECT repo, digest FROM version_weights WHERE key = ? AND " + t, err
	case "stage", "version":
		if c.Op == "!=" { // "not in that stage"
			eq := c
			eq.Op = "="
			return d.compile(query.Not{X: eq}, args)
		}
		if c.Field == "stage" && c.Op != "=" && c.Op != "in" && c.Op != "like" {
			return "", &query.Error{Pos: c.Pos, Msg: "stage supports =, !=, in and like"}
		}
		*args = append(*args, c.Field)
		t, err := d.test("tag", c, args)
		return "SELECT repo, digest FROM tags WHERE kind = ? AND " + t, err
	case "repository":
		t, err := d.test("repo", c, args)
		return "SELECT repo, digest FROM versions WHERE " + t, err
	case "digest", "framework", "description", "created":
		t, err := d.test(c.Field, c, args)
		return "SELECT repo, digest FROM versions WHERE " + t, err
	}
	return "", &query.Error{Pos: c.Pos, Msg: "unknown field " + c.Field}
}

// stageSetCap is how many stage tags a stage comparison may match to be
// checked against a hash of them (stageSet). A variable so the oracle
// test can make every stage check a probe.
var stageSetCap = 20_000

// stageSet renders a stage comparison as membership in the set of
// versions holding those stages, read once: SQLite builds an index of an
// uncorrelated IN subquery once per statement, and PostgreSQL, kept from
// turning it into a join by the CASE, hashes it (a hashed SubPlan) while
// it estimates it fits in memory: the caller uses it only for sets of up
// to stageSetCap tags. A walk of 10,644 versions for the 100 best in
// production checked each with a probe of tags_stage in 17.8 ms on
// PostgreSQL at 1,000,000 versions, against a hash of its 10,000 stage
// tags in 9.2 ms.
func (d dialect) stageSet(c query.Cmp, args *[]any) (string, error) {
	t, err := d.test("tag", c, args)
	if err != nil {
		return "", err
	}
	in := "(" + d.key() + ".repo, " + d.key() + ".digest) IN (SELECT repo, digest FROM tags WHERE kind = 'stage' AND " + t + ")"
	if d.postgres {
		return "CASE WHEN " + in + " THEN TRUE ELSE FALSE END", nil
	}
	return in, nil
}

// weightColumn is the column of version_weights a weights.NAME compares.
func weightColumn(key string) string {
	if query.WeightFields[key] {
		return "num"
	}
	return "str"
}

// compileRow turns a query into a condition on one row of versions v
// (whose repository and digest d.key names: a walk of another table
// checks its entries before it reads their versions row),
// checked with index lookups. With an index-ordered scan (newest first) and
// a LIMIT, SQLite stops after the first matches: the right plan when
// matches are common, where compile's set operations would read them all.
func (d dialect) compileRow(n query.Node, args *[]any) (string, error) {
	switch n := n.(type) {
	case nil:
		return "1 = 1", nil
	case query.And:
		return d.binaryRow(n.L, n.R, "AND", args)
	case query.Or:
		return d.binaryRow(n.L, n.R, "OR", args)
	case query.Not:
		x, err := d.compileRow(n.X, args)
		return "NOT (" + x + ")", err
	case query.Cmp:
		return d.compileCmpRow(n, args)
	}
	return "", fmt.Errorf("unknown query node %T", n)
}

func (d dialect) binaryRow(l, r query.Node, op string, args *[]any) (string, error) {
	a, err := d.compileRow(l, args)
	if err != nil {
		return "", err
	}
	b, err := d.compileRow(r, args)
	return "(" + a + " " + op + " " + b + ")", err
}

func (d dialect) compileCmpRow(c query.Cmp, args *[]any) (string, error) {
	switch c.Field {
	case "metrics":
		*args = append(*args, c.Key)
		t, err := d.test("m.value", c, args)
		return "EXISTS (SELECT 1 FROM version_metrics m WHERE m.repo = " + d.key() + ".repo AND m.digest = " + d.key() + ".digest AND m.key = ? AND " + t + d.perRow() + ")", err
	case "params", "labels":
		*args = append(*args, c.Field, c.Key)
		t, err := d.test("p.value", c, args)
		return "EXISTS (SELECT 1 FROM version_props p WHERE p.repo = " + d.key() + ".repo AND p.digest = " + d.key() + ".digest AND p.kind = ? AND p.key = ? AND " + t + d.perRow() + ")", err
	case "weights":
		*args = append(*args, c.Key)
		t, err := d.test("w."+weightColumn(c.Key), c, args)
		return "EXISTS (SELECT 1 FROM version_weights w WHERE w.repo = " + d.key() + ".repo AND w.digest = " + d.key() + ".digest AND w.key = ? AND " + t + d.perRow() + ")", err
	case "stage", "version":
		kind := c.Field
		if c.Op == "!=" { // "not in that stage"
			eq := c
			eq.Op = "="
			inner, err := d.compileCmpRow(eq, args)
			return "NOT " + inner, err
		}
		if c.Field == "stage" && c.Op != "=" && c.Op != "in" && c.Op != "like" {
			return "", &query.Error{Pos: c.Pos, Msg: "stage supports =, !=, in and like"}
		}
		// The kind is a literal (one of two, never user text), so a stage
		// check can use the stage tags' own partial index (tags_stage).
		t, err := d.test("t.tag", c, args)
		from := "tags t"
		if kind == "stage" {
			from = d.stageTags()
		}
		return "EXISTS (SELECT 1 FROM " + from + " WHERE t.repo = " + d.key() + ".repo AND t.digest = " + d.key() + ".digest AND t.kind = '" + kind + "' AND " + t + d.perRow() + ")", err
	case "repository":
		return d.test(d.noIndex(d.key()+".repo"), c, args)
	case "digest":
		return d.test(d.noIndex(d.key()+".digest"), c, args)
	case "framework", "created":
		if d.wide {
			return d.test(d.noIndex(d.key()+"."+c.Field), c, args)
		}
		return d.test(d.noIndex("v."+c.Field), c, args)
	case "description":
		return d.test(d.noIndex("v."+c.Field), c, args)
	}
	return "", &query.Error{Pos: c.Pos, Msg: "unknown field " + c.Field}
}

// selective is how many matches make a comparison worth driving a search
// (a variable so the oracle test can make every plan run).
var selective = 5000

// walkWindow is how many entries of an index a walk reads at most before
// it gives up on filling the page, at any page size up to this many matches:
// past it, matches are rarer than 1 in walkWindow/limit and the sets,
// which read each comparison's matches once, are the better plan. At
// 1,000,000 versions a search for two metrics both above 0.99 (about 100
// matches) walked every version (2.4 s) before it had a window. A
// variable so the oracle test can make windows cut.
var walkWindow = 50_000

// searchPlan is one way to answer a search: the FROM, WHERE and ORDER BY
// clauses of a SELECT over versions v, their arguments in that order, and
// whether it walks a window of an index (a page it leaves short may lack
// matches beyond the window: the sets must answer).
type searchPlan struct {
	from, where, order string
	args               []any
	windowed           bool
}

// plan picks how to evaluate a query. When a top-level conjunct matches
// few versions (counted, up to a cap, on its index), the search starts
// from those and checks the rest per row. When the query is a conjunction
// of comparisons that each match at most smallSet versions, the sets
// answer it (smallSets). Otherwise it walks an index in
// the order asked, checks each row and stops at the limit: versions' own
// index for created and repository, and the metric's for metrics.NAME
// (from a top-level comparison's bound on it, if any: rows lacking the
// metric come last, so a page the walk fills is the right page). A walk
// reads a window of walkWindow entries at most; a page it leaves short is
// answered by sets (setPlan), as is every other query.
func (x *Index) plan(ctx context.Context, q query.Node, ord ordering, need int) (searchPlan, error) {
	return plan(ctx, x.rd, q, ord, need)
}

// plan is Index.plan on one reader connection or transaction; need is
// the offset and limit of the page.
func plan(ctx context.Context, db querier, q query.Node, ord ordering, need int) (searchPlan, error) {
	d := db.dia()
	var conjuncts []query.Node
	var flatten func(n query.Node)
	flatten = func(n query.Node) {
		if a, ok := n.(query.And); ok {
			flatten(a.L)
			flatten(a.R)
			return
		}
		conjuncts = append(conjuncts, n)
	}
	if q != nil {
		flatten(q)
	}
	// Each comparison's matches, counted up to the cap: the fewest drives,
	// and the per-row checks run rarest first, so most rows are refused by
	// the first.
	// A stage comparison is counted further: a stage set that small is
	// read once into a hash (stageSet) instead of probed per row.
	counts, raw, exact := make([]int, len(conjuncts)), make([]int, len(conjuncts)), make([]bool, len(conjuncts))
	hashed := make([]bool, len(conjuncts))
	best, bestCount, bound := -1, selective+1, -1
	for i, c := range conjuncts {
		counts[i] = selective + 1
		cmp, ok := c.(query.Cmp)
		if !ok {
			continue
		}
		if ord.metric != "" && cmp.Field == "metrics" && cmp.Key == ord.metric && bound < 0 {
			bound = i
		}
		if cmp.Op == "!=" {
			continue
		}
		var a []any
		set, err := d.compileCmp(cmp, &a)
		if err != nil {
			return searchPlan{}, err
		}
		limit := selective + 1
		if cmp.Field == "stage" {
			limit = max(limit, stageSetCap+1)
		}
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+set+` LIMIT `+fmt.Sprint(limit)+`) q`, a...).Scan(&counts[i]); err != nil {
			return searchPlan{}, err
		}
		raw[i], exact[i] = counts[i], counts[i] < limit
		hashed[i] = cmp.Field == "stage" && counts[i] <= stageSetCap
		counts[i] = min(counts[i], selective+1)
		if counts[i] < bestCount {
			best, bestCount = i, counts[i]
		}
	}
	if best < 0 && len(conjuncts) > 1 && smallSets(ctx, db, conjuncts, raw, exact) {
		return setPlan(d, q, ord)
	}
	byCount := make([]int, len(conjuncts))
	for i := range byCount {
		byCount[i] = i
	}
	slices.SortStableFunc(byCount, func(a, b int) int { return counts[a] - counts[b] })
	p := searchPlan{from: "versions v", order: ord.clause}
	// rest is the query without conjunct skip, as row checks.
	rest := func(d dialect, skip int) (string, error) {
		var conds []string
		for _, i := range byCount {
			if i == skip {
				continue
			}
			var cond string
			var err error
			if hashed[i] {
				cond, err = d.stageSet(conjuncts[i].(query.Cmp), &p.args)
			} else {
				cond, err = d.compileRow(conjuncts[i], &p.args)
			}
			if err != nil {
				return "", err
			}
			conds = append(conds, " AND "+cond)
		}
		return strings.Join(conds, ""), nil
	}
	window := max(walkWindow, need)
	switch {
	case best >= 0:
		set, err := d.compileCmp(conjuncts[best].(query.Cmp), &p.args)
		if err != nil {
			return searchPlan{}, err
		}
		p.from = "(SELECT DISTINCT repo, digest FROM (" + set + ") q) d " + d.versionsOf("d")
		cond, err := rest(d, best)
		if err != nil {
			return searchPlan{}, err
		}
		p.where = "WHERE 1 = 1" + cond
	case ord.metric != "":
		// The metric's index in the order asked, each entry a version that
		// has the metric, in the index's own order (value, then repository
		// and digest, all in the direction asked), the order ord.clause
		// spells for every plan. Row checks read o's repository and digest,
		// so a refused entry never reads its versions row.
		p.args = append(p.args, ord.metric)
		bounds := ""
		if bound >= 0 {
			t, err := d.test("value", conjuncts[bound].(query.Cmp), &p.args)
			if err != nil {
				return searchPlan{}, err
			}
			bounds = " AND " + t
		}
		dir := ord.dir
		p.from = "(SELECT repo, digest, value FROM version_metrics WHERE key = ?" + bounds + " ORDER BY value " + dir + ", repo " + dir + ", digest " + dir +
			" LIMIT " + fmt.Sprint(window) + ") o " + d.versionsOf("o")
		o := d
		o.alias = "o"
		cond, err := rest(o, bound)
		if err != nil {
			return searchPlan{}, err
		}
		p.where = "WHERE 1 = 1" + cond
		p.order = "o.value " + dir + ", o.repo " + dir + ", o.digest " + dir
		p.windowed = true
		return p, nil
	case ord.indexed && q != nil:
		// versions in the order asked, through the index that gives it
		// (the subquery keeps that order, and stops the walk at the
		// window). For created, that index also holds the framework: the
		// window reads only the index, the checks read w, and a version's
		// row is read once it matched.
		w := d
		w.alias, w.wide = "w", true
		p.from = "(SELECT repo, digest, created, framework FROM versions v ORDER BY " + ord.clause + " LIMIT " + fmt.Sprint(window) + ") w " + d.versionsOf("w")
		cond, err := rest(w, -1)
		if err != nil {
			return searchPlan{}, err
		}
		p.where = "WHERE 1 = 1" + cond
		p.order = strings.ReplaceAll(ord.clause, "v.", "w.")
		p.windowed = true
	case ord.indexed:
	default:
		return setPlan(d, q, ord)
	}
	if ord.metric != "" {
		p.args = append(p.args, ord.metric)
	}
	return p, nil
}

// smallSet is how many matches each comparison of a conjunction may have
// for the sets to answer it without a walk: then they read at most that
// many index entries each, where a walk finds few matches when the
// comparisons are each common and seldom together (two metrics both above
// 0.99: about 10,000 versions each, 100 both, which a walk looks for
// through its whole window). A variable so the oracle test can make the
// walks run.
var smallSet = 20_000

// smallSets reports whether every conjunct is a comparison matching at
// most smallSet versions, counting further those the first count capped
// (raw: those counts, exact where under their cap), and stopping at the
// first that matches more.
func smallSets(ctx context.Context, db querier, conjuncts []query.Node, raw []int, exact []bool) bool {
	for i, c := range conjuncts {
		cmp, ok := c.(query.Cmp)
		if !ok || cmp.Op == "!=" || raw[i] > smallSet {
			return false
		}
	}
	// The framework first: a handful of values for every version, so
	// the likeliest to be large and end the counting at once.
	order := make([]int, len(conjuncts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		fa, fb := conjuncts[a].(query.Cmp).Field == "framework", conjuncts[b].(query.Cmp).Field == "framework"
		switch {
		case fa && !fb:
			return -1
		case fb && !fa:
			return 1
		}
		return 0
	})
	d := db.dia()
	for _, i := range order {
		c := conjuncts[i]
		if exact[i] {
			continue
		}
		var a []any
		set, err := d.compileCmp(c.(query.Cmp), &a)
		if err != nil {
			return false
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+set+` LIMIT `+fmt.Sprint(smallSet+1)+`) q`, a...).Scan(&n); err != nil || n > smallSet {
			return false
		}
	}
	return true
}

// setPlan evaluates the query by sets, in any order: the plan that reads
// each comparison's matches once, whatever their order.
func setPlan(d dialect, q query.Node, ord ordering) (searchPlan, error) {
	p := searchPlan{from: "versions v", order: ord.clause}
	if q != nil {
		set, err := d.compile(q, &p.args)
		if err != nil {
			return searchPlan{}, err
		}
		p.from = "(SELECT DISTINCT repo, digest FROM (" + set + ") q) s " + d.versionsOf("s")
	}
	if ord.metric != "" {
		p.args = append(p.args, ord.metric)
	}
	return p, nil
}

// ordering is an order_by as SQL: its ORDER BY clause over versions v,
// and which index walk gives it.
type ordering struct {
	clause string
	// indexed: an index of versions gives this order (created, repository).
	indexed bool
	// metric names the metric of a metrics.NAME order (its clause binds it).
	metric string
	dir    string // ASC or DESC
}

// orderBy turns "metrics.accuracy desc" into an ordering. Ties break by
// repository and digest in the direction asked, as the indexes walked
// for created, repository and metrics.NAME order them, so every plan
// gives the same rows in the same order.
func orderBy(spec string) (ordering, error) {
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
		return ordering{}, &query.Error{Msg: fmt.Sprintf("order_by %q: the direction is asc or desc", spec)}
	}
	switch {
	case strings.HasPrefix(field, "metrics.") && len(field) > len("metrics."):
		return ordering{clause: "(SELECT value FROM version_metrics m WHERE m.repo = v.repo AND m.digest = v.digest AND m.key = ?) " + dir + " NULLS LAST, v.repo " + dir + ", v.digest " + dir,
			metric: strings.TrimPrefix(field, "metrics."), dir: dir}, nil
	case field == "created":
		return ordering{clause: "v.created " + dir + ", v.repo " + dir + ", v.digest " + dir, indexed: true, dir: dir}, nil
	case field == "repository":
		return ordering{clause: "v.repo " + dir + ", v.digest " + dir, indexed: true, dir: dir}, nil
	case field == "framework":
		return ordering{clause: "v.framework " + dir + ", v.repo, v.digest", dir: dir}, nil
	case field == "version":
		return ordering{clause: "(SELECT MAX(tag) FROM tags t WHERE t.repo = v.repo AND t.digest = v.digest AND t.kind = 'version') " + dir + " NULLS LAST, v.repo, v.digest", dir: dir}, nil
	}
	return ordering{}, &query.Error{Msg: fmt.Sprintf("order_by %q: order by created, framework, repository, version or metrics.NAME", spec)}
}

// querier is what a read needs: the readers' pool, or one read
// transaction on one of its connections.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	// dia is the database's dialect, for the SQL the two spell apart.
	dia() dialect
}

// snapshot runs fn in one read transaction on one reader connection: a
// request that makes several queries takes a connection from the pool
// once (under load, each trip back to the pool waited behind every other
// request's queries), and its queries all see the same committed state.
func (x *Index) snapshot(ctx context.Context, fn func(db querier) error) error {
	// The turn is taken in arrival order (database/sql hands a freed
	// connection to a random waiter, which under load gave some requests
	// many times the median wait).
	select {
	case x.turns <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-x.turns }()
	tx, err := x.rd.BeginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(tx)
}

// Search returns the versions matching opts, with their tags and metadata.
func (x *Index) Search(ctx context.Context, opts SearchOptions) (out []VersionRow, err error) {
	err = x.snapshot(ctx, func(db querier) error {
		out, err = searchIn(ctx, db, opts)
		return err
	})
	return out, err
}

func searchIn(ctx context.Context, db querier, opts SearchOptions) ([]VersionRow, error) {
	ord, err := orderBy(opts.OrderBy)
	if err != nil {
		return nil, err
	}
	if opts.Limit <= 0 || opts.Limit > 1000 {
		opts.Limit = 100
	}
	opts.Offset = max(opts.Offset, 0)
	p, err := plan(ctx, db, opts.Query, ord, opts.Offset+opts.Limit)
	if err != nil {
		return nil, err
	}
	out, err := page(ctx, db, p, opts)
	if err == nil && p.windowed && len(out) < opts.Limit {
		// The window held fewer matches than the page: more may lie past it.
		if p, err = setPlan(db.dia(), opts.Query, ord); err == nil {
			out, err = page(ctx, db, p, opts)
		}
	}
	if err != nil {
		return nil, err
	}
	return out, fill(ctx, db, out)
}

// page runs a plan for one page of versions.
func page(ctx context.Context, db querier, p searchPlan, opts SearchOptions) ([]VersionRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT v.repo, v.digest, v.created, v.framework, v.description, v.size, v.files
		FROM `+p.from+` `+p.where+` ORDER BY `+p.order+` LIMIT ? OFFSET ?`, append(p.args, opts.Limit, opts.Offset)...)
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
	return out, rows.Err()
}

// fill adds tags, metrics, params and labels to rows, in three queries.
func fill(ctx context.Context, db querier, rows []VersionRow) error {
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
	tq, err := db.QueryContext(ctx, `SELECT repo, digest, tag, kind FROM tags WHERE `+in+` ORDER BY tag`, keys...)
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
	if err := tq.Err(); err != nil {
		tq.Close()
		return err
	}
	tq.Close()
	mq, err := db.QueryContext(ctx, `SELECT repo, digest, key, value FROM version_metrics WHERE `+in, keys...)
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
	if err := mq.Err(); err != nil {
		mq.Close()
		return err
	}
	mq.Close()
	pq, err := db.QueryContext(ctx, `SELECT repo, digest, kind, key, value FROM version_props WHERE `+in, keys...)
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
	if err := pq.Err(); err != nil {
		return err
	}
	pq.Close()
	return fillWeights(ctx, db, in, keys, at)
}

// ModelRow summarizes one model repository.
type ModelRow = wire.ModelRow

// Models lists model repositories by name, after the name after.
func (x *Index) Models(ctx context.Context, after string, limit int) (out []ModelRow, err error) {
	err = x.snapshot(ctx, func(db querier) error {
		out, err = models(ctx, db, after, limit)
		return err
	})
	return out, err
}

func models(ctx context.Context, db querier, after string, limit int) ([]ModelRow, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	rows, err := db.QueryContext(ctx, `SELECT repo, COUNT(*), MAX(created) FROM versions WHERE repo > ? GROUP BY repo ORDER BY repo LIMIT ?`, after, limit)
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
	if err := rows.Err(); err != nil {
		rows.Close()
		return nil, err
	}
	rows.Close()
	if len(out) == 0 {
		return out, nil
	}
	marks := make([]string, len(out))
	names := make([]any, len(out))
	at := map[string]*ModelRow{}
	for i := range out {
		marks[i], names[i] = "?", out[i].Repository
		at[out[i].Repository] = &out[i]
	}
	sq, err := db.QueryContext(ctx, `SELECT t.repo, t.tag, t.digest FROM tags t JOIN versions v ON v.repo = t.repo AND v.digest = t.digest
		WHERE t.kind = 'stage' AND t.repo IN (`+strings.Join(marks, ", ")+`)`, names...)
	if err != nil {
		return nil, err
	}
	defer sq.Close()
	for sq.Next() {
		var repo, t, d string
		if err := sq.Scan(&repo, &t, &d); err != nil {
			return nil, err
		}
		at[repo].Stages[t] = d
	}
	if err := sq.Err(); err != nil {
		return nil, err
	}
	sq.Close()
	// The newest version's tag (by the (repo, created) index, then its tag
	// by (repo, digest): "+t.kind" keeps SQLite from walking every version
	// tag through the (kind, tag) index instead) and the last stage move,
	// for the page's models in one statement.
	lq, err := db.QueryContext(ctx, `WITH r(repo) AS (VALUES `+strings.Join(slices.Repeat([]string{"(?)"}, len(out)), ", ")+`)
		SELECT r.repo,
			(SELECT (SELECT MAX(t.tag) FROM tags t WHERE t.repo = v.repo AND t.digest = v.digest AND `+db.dia().noIndex("t.kind")+` = 'version')
				FROM versions v WHERE v.repo = r.repo ORDER BY v.created DESC LIMIT 1),
			(SELECT MAX(p.time) FROM promotions p WHERE p.repo = r.repo AND p.trusted = 1)
		FROM r`, names...)
	if err != nil {
		return nil, err
	}
	defer lq.Close()
	for lq.Next() {
		var repo string
		var v, moved sql.NullString
		if err := lq.Scan(&repo, &v, &moved); err != nil {
			return nil, err
		}
		at[repo].LatestVersion, at[repo].LastMove = v.String, moved.String
	}
	if err := lq.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// History returns the promotion records of a stage, newest first, as the
// records' JSON.
func (x *Index) History(ctx context.Context, repo, stage string) ([]json.RawMessage, error) {
	rows, err := x.rd.QueryContext(ctx, `SELECT body FROM promotions WHERE repo = ? AND stage = ? AND trusted = 1 ORDER BY seq DESC, time DESC, record DESC`, repo, stage)
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

// Stages lists the stages of repo with a trusted history, by name.
func (x *Index) Stages(ctx context.Context, repo string) ([]string, error) {
	return x.strings(ctx, `SELECT DISTINCT stage FROM promotions WHERE repo = ? AND trusted = 1 ORDER BY stage`, repo)
}
