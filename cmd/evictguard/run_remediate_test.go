package main

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/reclaim"
	"github.com/evictguard/evictguard/remediate"
	"github.com/evictguard/evictguard/treecopy"
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

// TestLadderEscalationQueuesRemediationPass: the reclaim ladder, out of local steps, calls
// the daemon's remediation (its Escalator): one pass is queued and takes the escalation,
// further escalations while it is pending are absorbed, and the ladder reports what it
// triggered. Without a running remediation the escalation fails.
func TestLadderEscalationQueuesRemediationPass(t *testing.T) {
	dry, wet := true, false
	tests := []struct {
		name     string
		policy   *policy.Policy
		running  bool
		wantRes  string
		wantWhat string
	}{
		{"dry-run policy", &policy.Policy{DryRun: &dry}, true, journal.ResultApplied, "remediation pass queued (threshold rewrite under the remediation policy, a dry run)"},
		{"acting policy", &policy.Policy{DryRun: &wet}, true, journal.ResultApplied, "remediation pass queued (threshold rewrite under the remediation policy)"},
		{"not running", &policy.Policy{DryRun: &dry}, false, journal.ResultFailed, "remediation is not running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &daemonRemediation{Policy: tt.policy}
			if tt.running {
				d.trigger = make(chan struct{}, 1)
				d.escalation = &atomic.Pointer[reclaim.Escalation]{}
			}
			rate := 1e6
			snap := &monitor.Snapshot{Signals: []monitor.SignalStatus{{Signal: "nodefs.available", State: monitor.StateWarning,
				ThresholdQuantity: 1 << 20, Headroom: 8 << 20, FillRate: &rate}}}
			l := &reclaim.Ladder{Policy: reclaim.Policy{Allow: reclaim.LadderSteps}, Escalator: d}
			res, err := l.Step(t.Context(), snap)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Actions) != 1 || res.Actions[0].Result != tt.wantRes || !strings.Contains(res.Actions[0].Reason, tt.wantWhat) {
				t.Fatalf("actions %+v, want one %s saying %q", res.Actions, tt.wantRes, tt.wantWhat)
			}
			if !tt.running {
				return
			}
			if len(d.trigger) != 1 {
				t.Fatalf("pending passes %d, want 1", len(d.trigger))
			}
			if e := d.escalation.Load(); e == nil || e.Signal != "nodefs.available" || e.Headroom != 8<<20 {
				t.Errorf("escalation for the pass %+v", e)
			}
			// A second escalation while the pass is pending is absorbed, never blocks.
			what, err := d.Escalate(t.Context(), reclaim.Escalation{Signal: "nodefs.available", Headroom: 4 << 20})
			if err != nil || !strings.Contains(what, "already pending") || len(d.trigger) != 1 || d.escalation.Load().Headroom != 4<<20 {
				t.Errorf("second escalation: %q %v, %d pending, latest %+v", what, err, len(d.trigger), d.escalation.Load())
			}
		})
	}
}

// TestEscalationOutcome: what the escalation's remediation pass does with the plan.
func TestEscalationOutcome(t *testing.T) {
	secs := 42.0
	esc := &reclaim.Escalation{Signal: "nodefs.available", Headroom: 8 << 20, SecondsToThreshold: &secs}
	old := map[string]string{"nodefs.available": "10%"}
	change := &remediate.ThresholdPlan{Old: old, New: map[string]string{"nodefs.available": "5%"}, Changes: map[string]string{"nodefs.available": "5%"}}
	refused := &remediate.ThresholdPlan{Old: old, New: old, Changes: map[string]string{}, Refusals: []string{"below the floor"}}
	nothing := &remediate.ThresholdPlan{Old: old, New: old, Changes: map[string]string{}}
	shared, dedicated := &monitor.Layout{}, &monitor.Layout{DedicatedImageFs: true}
	preflight := &migration.Plan{Runtime: "docker", From: "/var/lib/docker", To: "/data/docker", Used: treecopy.Usage{Bytes: 3 << 30}}
	offered := &remediate.MigrationDecision{Enabled: true, Runtime: "docker", Preflight: preflight}
	refusedMig := &remediate.MigrationDecision{Enabled: true, Runtime: "docker", Refusals: []string{"migration preflight: --to /data has 1.00GiB available"}}
	tests := []struct {
		name       string
		tp         *remediate.ThresholdPlan
		mig        *remediate.MigrationDecision
		blockers   []string
		dry        bool
		layout     *monitor.Layout
		wantAction string
		wantResult string // "" = apply
		wantReason []string
		notReason  string
	}{
		{"dry run reports the planned rewrite", change, nil, nil, true, dedicated, journal.KindThresholdRewrite, journal.ResultDryRun,
			[]string{"escalated by the reclaim ladder (nodefs.available headroom 8.0 MiB, threshold in 42s)", "dry run: would lower nodefs.available<5%"}, "migrate"},
		{"acting policy applies", change, nil, nil, false, dedicated, journal.KindThresholdRewrite, "", []string{"lowering nodefs.available<5%"}, "migrate"},
		{"gate blocks", change, nil, []string{"cooldown: last restart 1m ago"}, false, dedicated, journal.KindThresholdRewrite, journal.ResultBlocked,
			[]string{"not rewriting thresholds: cooldown: last restart 1m ago"}, ""},
		{"planner refuses", refused, nil, nil, false, dedicated, journal.KindThresholdRewrite, journal.ResultBlocked, []string{"below the floor"}, ""},
		{"nothing to rewrite, migration advised", nothing, nil, nil, true, shared, journal.KindThresholdRewrite, journal.ResultBlocked,
			[]string{"nothing to rewrite", "imagefs shares nodefs", "evictguard migrate", "policy does not allow it"}, ""},
		{"migration refused: the rewrite goes ahead, with why not", change, refusedMig, nil, false, shared, journal.KindThresholdRewrite, "",
			[]string{"lowering nodefs.available<5%", "not done now: migration preflight: --to /data has 1.00GiB available"}, ""},
		{"migration offered: preferred over the rewrite", change, offered, nil, false, shared, journal.KindMigrateDataRoot, journal.ResultTriggered,
			[]string{"triggered the migration of the docker data root /var/lib/docker → /data/docker (3.0 GiB"}, "lowering"},
		{"migration offered, dry run", change, offered, nil, true, shared, journal.KindMigrateDataRoot, journal.ResultDryRun,
			[]string{"dry run: would migrate the docker data root"}, "lower"},
		{"migration offered, gate blocks", change, offered, []string{"outside every maintenance window"}, false, shared, journal.KindMigrateDataRoot, journal.ResultBlocked,
			[]string{"not migrating the docker data root", "outside every maintenance window"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, apply := escalationOutcome(esc, tt.tp, tt.mig, tt.blockers, tt.dry, tt.layout)
			wantApply := tt.wantResult == "" || tt.wantResult == journal.ResultTriggered
			if apply != wantApply || (tt.wantResult != "" && rep.Result != tt.wantResult) {
				t.Fatalf("apply %v result %q, want %q", apply, rep.Result, tt.wantResult)
			}
			if rep.Action != tt.wantAction {
				t.Errorf("action %q, want %q", rep.Action, tt.wantAction)
			}
			for _, w := range tt.wantReason {
				if !strings.Contains(rep.Reason, w) {
					t.Errorf("reason %q lacks %q", rep.Reason, w)
				}
			}
			if tt.notReason != "" && strings.Contains(rep.Reason, tt.notReason) {
				t.Errorf("reason %q mentions %q", rep.Reason, tt.notReason)
			}
		})
	}
}

func TestMetricsReporterCountsOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := monitor.NewRemediationMetrics(reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rep journal.Reporter = metricsReporter{m}
	for _, r := range []journal.Report{
		{Action: journal.KindThresholdRewrite, Result: journal.ResultBlocked},
		{Action: journal.KindThresholdRewrite, Result: journal.ResultBlocked},
		{Action: journal.KindThresholdRewrite, Result: journal.ResultRolledBack},
	} {
		rep.Report(context.Background(), r)
	}
	tests := []struct {
		result string
		want   float64
	}{
		{journal.ResultBlocked, 2},
		{journal.ResultRolledBack, 1},
		{journal.ResultApplied, 0},
	}
	for _, tt := range tests {
		t.Run(tt.result, func(t *testing.T) {
			got := counterValue(t, reg, "evictguard_remediation_attempts_total", map[string]string{"action": journal.KindThresholdRewrite, "result": tt.result})
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

// TestRemediationLabelsMatchMonitor: the action and result label values exported from zero
// are the ones the remediation pass reports, and monitor's defaults (for callers without the
// journal's lists) say the same.
func TestRemediationLabelsMatchMonitor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want []string
	}{
		{"actions", remediationActions, monitor.RemediationActions},
		{"results", remediationResults, monitor.RemediationResults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.Equal(tc.got, tc.want) {
				t.Errorf("the daemon exports %q from zero, monitor's defaults are %q", tc.got, tc.want)
			}
		})
	}
}
