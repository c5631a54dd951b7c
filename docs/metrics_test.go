package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evictguard/evictguard/monitor"
)

const metricsDoc = "metrics.md"

// documentedMetrics returns the metric names in the first column of metrics.md's table.
// A cell may abbreviate siblings: "`evictguard_signal_available_bytes` / `_inodes`" is
// evictguard_signal_available_bytes and evictguard_signal_available_inodes.
func documentedMetrics(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile("`([^`]+)`")
	out := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		var base string
		for _, m := range code.FindAllStringSubmatch(first, -1) {
			name := m[1]
			if strings.HasPrefix(name, "_") && base != "" {
				name = base[:strings.LastIndex(base, "_")] + name
			} else {
				base = name
			}
			out[name] = i + 1
		}
	}
	return out
}

// recorder is a prometheus.Registerer that keeps what is registered, to read the names of
// vectors that have no series yet (Gather would not show them).
type recorder struct{ descs []*prometheus.Desc }

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		r.descs = append(r.descs, d)
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return true }

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) names(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, d := range r.descs {
		m := fqNameRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		out = append(out, m[1])
	}
	return out
}

// describedMetrics asks the product's collectors themselves: the monitor's collector (whose
// names are built in a loop, so a source scan cannot see them all) and the remediation metrics.
func describedMetrics(t *testing.T) []string {
	t.Helper()
	r := &recorder{}
	if err := r.Register(monitor.NewCollector(nil, monitor.CollectorOptions{})); err != nil {
		t.Fatal(err)
	}
	if _, err := monitor.NewRemediationMetrics(r, nil, nil); err != nil {
		t.Fatal(err)
	}
	return r.names(t)
}

// scannedMetrics finds the metrics registered anywhere else in product code by reading the
// source: every prometheus.*Opts literal with a literal Name (its Namespace a literal or a
// package constant). A prometheus.NewDesc outside monitor.NewCollector fails the test, since
// its name cannot be read here: ask its constructor in describedMetrics instead.
func scannedMetrics(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "docs", "deploy", "e2e", "hack", "testdata", "vendor", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// String constants by package directory and name, to resolve Namespace: Namespace.
	consts := map[string]string{}
	key := func(f *ast.File, name string) string { return filepath.Dir(fset.File(f.Pos()).Name()) + "." + name }
	for _, f := range files {
		for _, decl := range f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if s, ok := stringLit(vs.Values[i]); ok {
							consts[key(f, n.Name)] = s
						}
					}
				}
			}
		}
	}
	var out []string
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if fn, ok := n.(*ast.FuncDecl); ok && fn.Name.Name == "NewCollector" && fn.Recv == nil {
				return false // described at run time
			}
			if call, ok := n.(*ast.CallExpr); ok && isPrometheus(call.Fun, "NewDesc") {
				t.Errorf("%s: prometheus.NewDesc outside monitor.NewCollector: add its constructor to describedMetrics", fset.Position(call.Pos()))
			}
			lit, ok := n.(*ast.CompositeLit)
			if !ok || !isPrometheusOpts(lit.Type) {
				return true
			}
			parts := map[string]string{}
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				k := kv.Key.(*ast.Ident).Name
				if s, ok := stringLit(kv.Value); ok {
					parts[k] = s
				} else if id, ok := kv.Value.(*ast.Ident); ok {
					if s, ok := consts[key(f, id.Name)]; ok {
						parts[k] = s
					}
				} else if k == "Namespace" || k == "Subsystem" || k == "Name" {
					t.Errorf("%s: %s is not a literal or a constant of its package", fset.Position(kv.Pos()), k)
				}
			}
			out = append(out, prometheus.BuildFQName(parts["Namespace"], parts["Subsystem"], parts["Name"]))
			return true
		})
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(b.Value)
	return s, err == nil
}

func isPrometheus(e ast.Expr, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "prometheus" && sel.Sel.Name == name
}

func isPrometheusOpts(e ast.Expr) bool {
	for _, n := range []string{"Opts", "CounterOpts", "GaugeOpts", "HistogramOpts", "SummaryOpts"} {
		if isPrometheus(e, n) {
			return true
		}
	}
	return false
}

// TestMetricsDocumented: every evictguard_ metric the product registers has a row in
// metrics.md, and every documented evictguard_ metric is registered.
func TestMetricsDocumented(t *testing.T) {
	documented := documentedMetrics(t)
	registered := map[string]bool{}
	for _, n := range append(describedMetrics(t), scannedMetrics(t)...) {
		registered[n] = true
	}
	// The scan must see what the constructors report, or it is not reading the source.
	for _, n := range []string{"evictguard_remediation_attempts_total", "evictguard_log_budget_bytes", "evictguard_reclaimed_bytes_total"} {
		if !registered[n] {
			t.Fatalf("%s not found among the registered metrics: the source scan is broken", n)
		}
	}
	var names []string
	for n := range registered {
		names = append(names, n)
	}
	for n := range documented {
		if !registered[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if !strings.HasPrefix(n, monitor.Namespace+"_") {
			continue
		}
		t.Run(n, func(t *testing.T) {
			line, doc := documented[n]
			switch {
			case registered[n] && !doc:
				t.Errorf("registered but not in %s's table", metricsDoc)
			case doc && !registered[n]:
				t.Errorf("%s:%d documents it, but nothing registers it", metricsDoc, line)
			}
		})
	}
}
