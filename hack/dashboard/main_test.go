package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/evictguard/evictguard/e2e/harness"
)

const (
	dashboardFile = "../../deploy/grafana/evictguard-fleet.json"
	metricsDoc    = "../../docs/metrics.md"
)

// TestDashboardUpToDate: the checked-in dashboard is this program's output.
// EVICTGUARD_UPDATE=1 rewrites it.
func TestDashboardUpToDate(t *testing.T) {
	want, err := render()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("EVICTGUARD_UPDATE") == "1" {
		if err := os.WriteFile(dashboardFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not the generator's output; run go run ./hack/dashboard > deploy/grafana/evictguard-fleet.json (or EVICTGUARD_UPDATE=1 go test ./hack/dashboard)", dashboardFile)
	}
}

type panelJSON struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// queries returns every panel's PromQL, keyed "panel title/refId", from the checked-in file.
func queries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []panelJSON `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	ids := map[int]string{}
	for _, p := range d.Panels {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			out[p.Title+"/"+q.RefID] = q.Expr
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d queries in %s", len(out), dashboardFile)
	}
	return out
}

// grafanaVars are the dashboard's variables and Grafana's built-ins as Grafana substitutes
// them before the query reaches Prometheus.
var grafanaVars = strings.NewReplacer(`$job`, `.*`, `$__rate_interval`, `1m`, `$__range`, `6h`)

// TestQueriesParse: every query parses with Prometheus's own parser. promtool check rules
// parses each rule's expression, so the queries go in as recording rules.
func TestQueriesParse(t *testing.T) {
	promtool := harness.Binary(t, "promtool", "prometheus")
	qs := queries(t)
	rules := writeRules(t, qs)
	out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%d rules found", len(qs)); !strings.Contains(string(out), want) {
		t.Errorf("promtool: %s, want %s", out, want)
	}
}

// TestQueriesUseExportedMetrics: every evictguard_ metric a query reads is one the daemon
// exports, as documented in docs/metrics.md (docs/metrics_test.go keeps that table true).
func TestQueriesUseExportedMetrics(t *testing.T) {
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`evictguard_[a-z_]+`)
	for name, q := range queries(t) {
		for _, m := range metric.FindAllString(q, -1) {
			if !bytes.Contains(doc, []byte("`"+m+"`")) {
				t.Errorf("%s: %s is not in %s", name, m, metricsDoc)
			}
		}
	}
}

// TestQueriesEvaluate runs the fleet queries on a small fleet with promtool test rules: three
// nodes, one breached (also predicted), one warning within the horizon, one ok with no
// prediction; the node reported by two pods during a rollout counts once.
func TestQueriesEvaluate(t *testing.T) {
	promtool := harness.Binary(t, "promtool", "prometheus")
	qs := queries(t)
	rules := writeRules(t, qs)
	rec := func(name string) string {
		if _, ok := qs[name]; !ok {
			t.Fatalf("no query %q", name)
		}
		return recordName(name)
	}
	series := func(metric, inst, pod, labels, values string) map[string]string {
		return map[string]string{"series": fmt.Sprintf(`%s{job="evictguard",instance=%q,pod=%q%s}`, metric, inst, pod, labels), "values": values}
	}
	var in []map[string]string
	for _, n := range []struct{ inst, pod, state string }{{"n1", "p1", "breached"}, {"n2", "p2", "warning"}, {"n2", "p2new", "warning"}, {"n3", "p3", "ok"}} {
		in = append(in, series("evictguard_build_info", n.inst, n.pod, `,version="v1",revision="r",goversion="go"`, "1x5"))
		for _, s := range []string{"ok", "warning", "breached", "unknown"} {
			v := "0x5"
			if s == n.state {
				v = "1x5"
			}
			in = append(in, series("evictguard_signal_state", n.inst, n.pod, `,signal="nodefs.available",kind="hard",role="nodefs",state="`+s+`"`, v))
		}
	}
	in = append(in,
		series("evictguard_signal_seconds_to_threshold", "n1", "p1", `,signal="nodefs.available",kind="hard",role="nodefs"`, "0x5"),
		series("evictguard_signal_seconds_to_threshold", "n2", "p2", `,signal="nodefs.available",kind="hard",role="nodefs"`, "1800x5"),
		series("evictguard_signal_seconds_to_threshold", "n2", "p2new", `,signal="nodefs.available",kind="hard",role="nodefs"`, "1790x5"),
		series("evictguard_signal_seconds_to_threshold", "n2", "p2", `,signal="imagefs.available",kind="hard",role="imagefs"`, "2400x5"),
	)
	type sample struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	}
	exp := func(name string, samples ...sample) map[string]any {
		return map[string]any{"expr": rec(name), "eval_time": "2m", "exp_samples": samples}
	}
	s := func(name string, value float64, labels string) sample {
		return sample{Labels: recordName(name) + labels, Value: value}
	}
	const (
		stateGauge = "Nodes by state"
		soonest    = "Soonest predicted eviction (20 nodes)"
		byTime     = "Nodes by time to threshold"
		ratio      = "Nodes within the warning horizon"
	)
	test := map[string]any{
		"rule_files":          []string{rules},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":     "1m",
			"input_series": in,
			"promql_expr_test": []any{
				exp(stateGauge+"/A", s(stateGauge+"/A", 1, "")),
				exp(stateGauge+"/B", s(stateGauge+"/B", 1, "")),
				exp(stateGauge+"/C", s(stateGauge+"/C", 0, "")),
				exp(stateGauge+"/D", s(stateGauge+"/D", 1, "")),
				exp(ratio+"/A", s(ratio+"/A", 2.0/3, `{job="evictguard"}`)),
				exp(soonest+"/A",
					s(soonest+"/A", 0, `{job="evictguard",instance="n1"}`),
					s(soonest+"/A", 1790, `{job="evictguard",instance="n2"}`)),
				exp(byTime+"/A",
					s(byTime+"/A", 0, `{job="evictguard",instance="n1",signal="nodefs.available",kind="hard",role="nodefs"}`),
					s(byTime+"/A", 1790, `{job="evictguard",instance="n2",signal="nodefs.available",kind="hard",role="nodefs"}`)),
			},
		}},
	}
	b, err := yaml.Marshal(test)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-test.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

var notName = regexp.MustCompile(`[^a-zA-Z0-9_]+`)

// recordName turns "panel title/refId" into a valid recording rule name.
func recordName(key string) string {
	return "dashboard:" + strings.Trim(notName.ReplaceAllString(key, "_"), "_")
}

// writeRules writes the queries as recording rules, Grafana's variables substituted.
func writeRules(t *testing.T, qs map[string]string) string {
	t.Helper()
	var rules []map[string]string
	for name, q := range qs {
		rules = append(rules, map[string]string{"record": recordName(name), "expr": grafanaVars.Replace(q)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}
