// Command dashboard writes evictguard's fleet dashboard for Grafana to stdout:
//
//	go run ./hack/dashboard > deploy/grafana/evictguard-fleet.json
//
// The dashboard is built with the Grafana Foundation SDK, so its JSON follows Grafana's own
// schema; main_test.go checks that the checked-in file is this program's output and that every
// query parses with Prometheus's parser (promtool).
//
// The queries use the daemon's metrics (docs/metrics.md) directly, not the recording rules of
// deploy/prometheus/evictguard-rules.yaml, so the dashboard works without those rules. A node
// is one evictguard target with the labels a ServiceMonitor adds per pod aggregated away, as
// in the rules. There is no panel for the remediation lock's Lease holders: the daemon exports
// no metric about Leases.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// UID is the dashboard's fixed uid, so links to it survive re-imports.
const UID = "evictguard-fleet"

// perPod are the labels a ServiceMonitor adds per pod; aggregating them away makes one series
// per node, whichever pod (old or new, during a rollout) reports it.
const perPod = "pod, container, endpoint, namespace, service"

// horizon is the warning horizon in seconds: the default --warn-horizon, as in the rules.
const horizon = 3600

var (
	// nodeSeconds is each node's soonest predicted time to an eviction threshold.
	nodeSeconds = `min without (` + perPod + `, signal, kind, role) (last_over_time(evictguard_signal_seconds_to_threshold{job=~"$job"}[1m]))`
	// nodeSignalSeconds is the same per signal, for picking the soonest signal of each node.
	nodeSignalSeconds = `min without (` + perPod + `) (last_over_time(evictguard_signal_seconds_to_threshold{job=~"$job"}[1m]))`
	// nodeBreached is 1 for a node with a signal past its threshold.
	nodeBreached = `max without (` + perPod + `, signal, kind, role, state) (evictguard_signal_state{job=~"$job", state="breached"})`
	// nodes is one series per node running evictguard.
	nodes = `max without (` + perPod + `, version, revision, goversion) (evictguard_build_info{job=~"$job"})`
	// headroomRatio is each filesystem signal's headroom as a fraction of its filesystem's
	// capacity (memory and PID signals have no filesystem and are left out).
	headroomRatio = `max without (` + perPod + `) (evictguard_signal_headroom_bytes{job=~"$job", role!=""})
  / on (cluster, job, instance, role) group_left ()
max without (` + perPod + `, path, mountpoint, device) (evictguard_filesystem_capacity_bytes{job=~"$job"})`
	// nodeWorst is each node's worst signal state: 3 breached, 2 warning, 1 unknown, 0 ok.
	nodeWorst = `max without (` + perPod + `, signal, kind, role, state) (
    3 * (evictguard_signal_state{job=~"$job", state="breached"} == 1)
  or
    2 * (evictguard_signal_state{job=~"$job", state="warning"} == 1)
  or
    1 * (evictguard_signal_state{job=~"$job", state="unknown"} == 1)
  or
    0 * (evictguard_signal_state{job=~"$job", state="ok"} == 1)
)`
)

func datasource() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}
}

func query(ref, expr string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().RefId(ref).Expr(expr).Datasource(datasource()).EditorMode(prometheus.QueryEditorModeCode)
}

// instantTable is an instant query whose series become table rows.
func instantTable(ref, expr string) *prometheus.DataqueryBuilder {
	return query(ref, expr).Instant().Format(prometheus.PromQueryFormatTable)
}

func steps(s ...dashboard.Threshold) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(s)
}

func step(v *float64, color string) dashboard.Threshold {
	return dashboard.Threshold{Value: v, Color: color}
}

// organize drops the Time column of instant-table results and renames the rest.
func organize(rename map[string]string, hide ...string) dashboard.DataTransformerConfig {
	ex := map[string]bool{"Time": true}
	for _, h := range hide {
		ex[h] = true
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{"excludeByName": ex, "renameByName": rename}}
}

// build uses the classic dashboard JSON model, which the SDK marks deprecated in favour of
// its v2 schema: v2 is a Grafana 12 API resource, while the classic model is what every
// Grafana's "Import dashboard" and file provisioning take.
func build() (dashboard.Dashboard, error) { //nolint:staticcheck // see above
	// Time to threshold: red within 10m (critical EvictionImminent), orange within 1h.
	timeColors := steps(step(nil, "red"), step(cog.ToPtr(600.0), "orange"), step(cog.ToPtr(float64(horizon)), "green"))
	// Headroom: red when gone, orange under 5 % of capacity (the default --warn-margin).
	headroomColors := steps(step(nil, "red"), step(cog.ToPtr(0.0), "orange"), step(cog.ToPtr(0.05), "green"))

	//nolint:staticcheck // the classic model, see build's comment
	b := dashboard.NewDashboardBuilder("evictguard fleet").
		Uid(UID).
		Description("Eviction risk across the nodes running evictguard: who is closest to an eviction threshold, by time and by headroom, node states and remediation outcomes. Generated by hack/dashboard.").
		Tags([]string{"evictguard", "kubernetes", "eviction"}).
		Refresh("1m").
		Time("now-6h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Prometheus").Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("job").Label("job").
			Datasource(datasource()).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(evictguard_build_info, job)")}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).IncludeAll(true).AllValue(".*"))

	b = b.WithRow(dashboard.NewRowBuilder("Fleet")).
		WithPanel(stat.NewPanelBuilder().Title("Nodes reporting").
			Description("Nodes whose evictguard exports metrics (evictguard_build_info). A node whose evictguard is down is not counted: see EvictguardDown.").
			Datasource(datasource()).Span(4).Height(6).
			WithTarget(query("A", `count(`+nodes+`)`).Instant())).
		WithPanel(stat.NewPanelBuilder().Title("Nodes within the warning horizon").
			Description("Fraction of the nodes with a signal predicted to reach its eviction threshold within 1h, or past it. EvictionImminentFleet fires above 10 % (and at least two nodes) for 5m.").
			Datasource(datasource()).Span(4).Height(6).Unit("percentunit").
			Thresholds(steps(step(nil, "green"), step(cog.ToPtr(0.0001), "orange"), step(cog.ToPtr(0.1), "red"))).
			WithTarget(query("A", fleetRatio()).Instant())).
		WithPanel(bargauge.NewPanelBuilder().Title("Nodes by state").
			Description("Each node counted once, by its worst signal: breached, warning (within --warn-horizon or --warn-margin), unknown (a filesystem could not be read), ok.").
			Datasource(datasource()).Span(8).Height(6).
			Orientation(common.VizOrientationHorizontal).DisplayMode(common.BarGaugeDisplayModeBasic).
			Min(0).
			Targets(stateQueries(true)).
			OverrideByName("breached", []dashboard.DynamicConfigValue{fixedColor("red")}).
			OverrideByName("warning", []dashboard.DynamicConfigValue{fixedColor("orange")}).
			OverrideByName("unknown", []dashboard.DynamicConfigValue{fixedColor("purple")}).
			OverrideByName("ok", []dashboard.DynamicConfigValue{fixedColor("green")})).
		WithPanel(timeseries.NewPanelBuilder().Title("Nodes by state over time").
			Datasource(datasource()).Span(8).Height(6).Min(0).Decimals(0).
			Targets(stateQueries(false)).
			OverrideByName("breached", []dashboard.DynamicConfigValue{fixedColor("red")}).
			OverrideByName("warning", []dashboard.DynamicConfigValue{fixedColor("orange")}).
			OverrideByName("unknown", []dashboard.DynamicConfigValue{fixedColor("purple")}).
			OverrideByName("ok", []dashboard.DynamicConfigValue{fixedColor("green")}))

	b = b.WithRow(dashboard.NewRowBuilder("Nodes closest to eviction")).
		WithPanel(bargauge.NewPanelBuilder().Title("Soonest predicted eviction (20 nodes)").
			Description("The 20 nodes with the shortest predicted time to any eviction threshold. Nodes whose signals are not being consumed have no prediction and are not listed.").
			Datasource(datasource()).Span(12).Height(10).Unit("s").Min(0).Max(2 * horizon).
			Orientation(common.VizOrientationHorizontal).DisplayMode(common.BarGaugeDisplayModeGradient).
			Thresholds(timeColors).
			WithTarget(query("A", `bottomk(20, `+nodeSeconds+`)`).Instant().LegendFormat("{{instance}}"))).
		WithPanel(bargauge.NewPanelBuilder().Title("Least headroom (20 nodes)").
			Description("The 20 nodes with the least headroom (available minus threshold) on any filesystem signal, as a fraction of that filesystem's capacity. Negative: past the threshold.").
			Datasource(datasource()).Span(12).Height(10).Unit("percentunit").Min(-0.05).Max(0.5).
			Orientation(common.VizOrientationHorizontal).DisplayMode(common.BarGaugeDisplayModeGradient).
			Thresholds(headroomColors).
			WithTarget(query("A", `bottomk(20, min without (signal, kind, role) (`+headroomRatio+`))`).Instant().LegendFormat("{{instance}}"))).
		WithPanel(table.NewPanelBuilder().Title("Nodes by time to threshold").
			Description("Every node with a prediction, soonest first, with the signal that gets there first.").
			Datasource(datasource()).Span(12).Height(12).Unit("s").
			Thresholds(timeColors).CellOptions(common.TableCellOptions{TableColoredBackgroundCellOptions: &common.TableColoredBackgroundCellOptions{Type: "color-background"}}).
			SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("time to threshold")}).
			WithTarget(instantTable("A", `bottomk without (signal, kind, role) (1, `+nodeSignalSeconds+`)`)).
			WithTransformation(organize(map[string]string{"Value": "time to threshold"}))).
		WithPanel(table.NewPanelBuilder().Title("Nodes by headroom").
			Description("Every node's filesystem signal with the least headroom (available minus threshold), as a fraction of its filesystem's capacity, least first.").
			Datasource(datasource()).Span(12).Height(12).Unit("percentunit").
			Thresholds(headroomColors).CellOptions(common.TableCellOptions{TableColoredBackgroundCellOptions: &common.TableColoredBackgroundCellOptions{Type: "color-background"}}).
			SortBy([]cog.Builder[common.TableSortByFieldState]{common.NewTableSortByFieldStateBuilder().DisplayName("headroom")}).
			WithTarget(instantTable("A", `bottomk without (signal, kind, role) (1, `+headroomRatio+`)`)).
			WithTransformation(organize(map[string]string{"Value": "headroom"})))

	b = b.WithRow(dashboard.NewRowBuilder("Time to eviction")).
		WithPanel(heatmap.NewPanelBuilder().Title("Time to eviction across nodes").
			Description("How many nodes are predicted to reach an eviction threshold in how long, over time (nodes within a day; a log scale). A band moving down is a fleet filling up.").
			Datasource(datasource()).Span(16).Height(10).
			Calculate(true).
			Calculation(common.NewHeatmapCalculationOptionsBuilder().
				YBuckets(common.NewHeatmapCalculationBucketConfigBuilder().
					Scale(common.NewScaleDistributionConfigBuilder().Type(common.ScaleDistributionLog).Log(2)))).
			YAxis(heatmap.NewYAxisConfigBuilder().Unit("s")).
			WithTarget(query("A", nodeSeconds+` < 86400`).LegendFormat("{{instance}}"))).
		WithPanel(timeseries.NewPanelBuilder().Title("Fraction of nodes within the warning horizon").
			Datasource(datasource()).Span(8).Height(10).Unit("percentunit").Min(0).
			WithTarget(query("A", fleetRatio()).LegendFormat("{{job}}")))

	b = b.WithRow(dashboard.NewRowBuilder("Remediation")).
		WithPanel(timeseries.NewPanelBuilder().Title("Remediation attempts").
			Description("evictguard_remediation_attempts_total by action and result, summed over the nodes. failed and rolled-back: RemediationFailed; blocked: RemediationBlocked.").
			Datasource(datasource()).Span(12).Height(8).Min(0).Decimals(0).
			WithTarget(query("A", `sum by (action, result) (increase(evictguard_remediation_attempts_total{job=~"$job"}[$__rate_interval])) > 0`).LegendFormat("{{action}} {{result}}"))).
		WithPanel(table.NewPanelBuilder().Title("Remediation outcomes in the time range").
			Datasource(datasource()).Span(12).Height(8).Decimals(0).
			WithTarget(instantTable("A", `sum by (action, result) (round(increase(evictguard_remediation_attempts_total{job=~"$job"}[$__range]))) > 0`)).
			WithTransformation(organize(map[string]string{"Value": "attempts"}))).
		WithPanel(timeseries.NewPanelBuilder().Title("Reclaim ladder steps").
			Description("evictguard_reclaim_actions_total by step and result (exported where the reclaim ladder is enabled).").
			Datasource(datasource()).Span(12).Height(8).Min(0).Decimals(0).
			WithTarget(query("A", `sum by (action, result) (increase(evictguard_reclaim_actions_total{job=~"$job"}[$__rate_interval])) > 0`).LegendFormat("{{action}} {{result}}"))).
		WithPanel(timeseries.NewPanelBuilder().Title("Bytes reclaimed").
			Datasource(datasource()).Span(12).Height(8).Min(0).Unit("bytes").
			WithTarget(query("A", `sum by (action) (increase(evictguard_reclaimed_bytes_total{job=~"$job"}[$__rate_interval])) > 0`).LegendFormat("{{action}}")))
	d, err := b.Build()
	if err != nil {
		return d, err
	}
	// Grafana keys panel state (links, the edited panel) by id; number them in layout order.
	for i, p := range d.Panels {
		id := uint32(i + 1)
		switch {
		case p.Panel != nil:
			p.Panel.Id = &id
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
	return d, nil
}

// fleetRatio is the fraction of nodes within the warning horizon or past a threshold (0 when
// none), as the recording rule cluster_job:evictguard_nodes_within_warning_horizon:ratio.
func fleetRatio() string {
	return fmt.Sprintf(`(
    count by (cluster, job) (%s < %d or %s == 1)
  or
    0 * count by (cluster, job) (%s)
)
/ count by (cluster, job) (%s)`, nodeSeconds, horizon, nodeBreached, nodes, nodes)
}

// stateQueries counts the nodes in each worst state; instant ones for the bar gauge.
func stateQueries(instant bool) []cog.Builder[variants.Dataquery] {
	var out []cog.Builder[variants.Dataquery]
	for i, s := range []struct {
		name  string
		level int
	}{{"breached", 3}, {"warning", 2}, {"unknown", 1}, {"ok", 0}} {
		q := query(string(rune('A'+i)), fmt.Sprintf("count((%s) == %d) or vector(0)", nodeWorst, s.level)).LegendFormat(s.name)
		if instant {
			q = q.Instant()
		}
		out = append(out, q)
	}
	return out
}

func fixedColor(c string) dashboard.DynamicConfigValue {
	return dashboard.DynamicConfigValue{Id: "color", Value: map[string]any{"mode": "fixed", "fixedColor": c}}
}

// render is the file's content: indented JSON and a final newline.
func render() ([]byte, error) {
	d, err := build()
	if err != nil {
		return nil, fmt.Errorf("build dashboard: %w", err)
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode dashboard: %w", err)
	}
	return append(out, '\n'), nil
}

func main() {
	out, err := render()
	if err == nil {
		_, err = os.Stdout.Write(out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}
