package main

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/remediate"
)

// TestDaemonRemediationTrigger: a pass is triggered when a signal enters warning or breached
// (also when it is already there at start, and on warning → breached), not while it stays,
// not on recovery, and a pending trigger absorbs further ones.
func TestDaemonRemediationTrigger(t *testing.T) {
	snap := func(states ...monitor.State) *monitor.Snapshot {
		s := &monitor.Snapshot{}
		for i, st := range states {
			s.Signals = append(s.Signals, monitor.SignalStatus{Signal: []string{"nodefs.available", "imagefs.available"}[i], Kind: "hard", State: st})
		}
		return s
	}
	ok, warn, br := monitor.StateOK, monitor.StateWarning, monitor.StateBreached
	steps := []struct {
		snap *monitor.Snapshot
		fire bool
	}{
		{snap(ok, ok), false},
		{snap(warn, ok), true},
		{snap(warn, ok), false},
		{snap(br, ok), true},
		{snap(br, ok), false},
		{snap(warn, ok), false}, // breached → warning: better, not a reason to act
		{snap(ok, ok), false},
		{snap(ok, br), true},
	}
	d := &daemonRemediation{prev: map[string]monitor.State{}, trigger: make(chan struct{}, 1)}
	for i, s := range steps {
		d.notify(s.snap)
		fired := false
		select {
		case <-d.trigger:
			fired = true
		default:
		}
		if fired != s.fire {
			t.Errorf("step %d: triggered %v, want %v", i, fired, s.fire)
		}
	}
	// Already breached at the first evaluation: act.
	d = &daemonRemediation{prev: map[string]monitor.State{}, trigger: make(chan struct{}, 1)}
	d.notify(snap(br, ok))
	d.notify(snap(br, warn)) // absorbed by the pending trigger, never blocks
	if len(d.trigger) != 1 {
		t.Errorf("pending triggers %d, want 1", len(d.trigger))
	}
}

func TestMetricsReporterCountsOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := monitor.NewRemediationMetrics(reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rep remediate.Reporter = metricsReporter{m}
	for _, r := range []remediate.Report{
		{Action: remediate.KindThresholdRewrite, Result: remediate.ResultBlocked},
		{Action: remediate.KindThresholdRewrite, Result: remediate.ResultBlocked},
		{Action: remediate.KindThresholdRewrite, Result: remediate.ResultRolledBack},
	} {
		rep.Report(context.Background(), r)
	}
	tests := []struct {
		result string
		want   float64
	}{
		{remediate.ResultBlocked, 2},
		{remediate.ResultRolledBack, 1},
		{remediate.ResultApplied, 0},
	}
	for _, tt := range tests {
		t.Run(tt.result, func(t *testing.T) {
			got := counterValue(t, reg, "evictguard_remediation_attempts_total", map[string]string{"action": remediate.KindThresholdRewrite, "result": tt.result})
			if got != tt.want {
				t.Errorf("attempts{result=%s} = %v, want %v", tt.result, got, tt.want)
			}
		})
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}
