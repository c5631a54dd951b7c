package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/reclaim"
	"github.com/evictguard/evictguard/remediate"
)

// daemonRemediation is policy-gated remediation inside `evictguard run`: on start, operations
// a crash interrupted are finished or rolled back (Executor.Recover); then, whenever a signal
// enters warning or breached, the same path as `evictguard apply --yes` runs — plan, gates,
// lock, journaled apply with verify and rollback. The policy is a dry run by default, so a
// --policy without `dryRun: false` only logs what would be done.
type daemonRemediation struct {
	cfg        *config.Configuration // runOptions.cfg
	policyFile string
	// Policy, when set (from the --config file's policy), is used instead of policyFile.
	Policy *policy.Policy

	// reporter, when set, also receives every outcome (the remediation counters).
	reporter journal.Reporter
	// rediscover re-discovers the monitor's filesystems after the data root moved.
	rediscover func(context.Context)

	prev    map[string]monitor.State
	trigger chan struct{}
	// last is the latest snapshot, for the passes (predictions); made by start.
	last *atomic.Pointer[monitor.Snapshot]
	// escalation is the reclaim ladder's latest escalation, taken by the next pass (made
	// with trigger: runOptions is copied before start).
	escalation *atomic.Pointer[reclaim.Escalation]
	// live carries a policy reloaded from the config file to the next pass (reload.go).
	live *policyLive
}

// Escalate implements reclaim.Escalator for the reclaim ladder (run_logs.go): local
// reclaim is exhausted, so a remediation pass is queued. It never blocks: a pass already
// pending takes the escalation.
func (d *daemonRemediation) Escalate(_ context.Context, e reclaim.Escalation) (string, error) {
	if d.trigger == nil || d.escalation == nil {
		return "", errors.New("remediation is not running")
	}
	d.escalation.Store(&e)
	p := d.live.get(d.Policy)
	what := "remediation pass queued (threshold rewrite under the remediation policy"
	if p.Migration.Enabled() {
		what = "remediation pass queued (data-root migration to " + p.Migration.To + ", else threshold rewrite, under the remediation policy"
	}
	if p.Dry() {
		what += ", a dry run"
	}
	select {
	case d.trigger <- struct{}{}:
		return what + ")", nil
	default:
		return "remediation pass already pending; it takes the escalation", nil
	}
}

// remediationActions and remediationResults are what the remediation pass reports, exported
// from zero in evictguard_remediation_attempts_total.
var (
	remediationActions = []string{journal.KindThresholdRewrite, journal.KindMigrateDataRoot}
	remediationResults = []string{journal.ResultApplied, journal.ResultFailed, journal.ResultRolledBack, journal.ResultBlocked, journal.ResultRecovered}
)

// metricsReporter counts remediation outcomes in evictguard_remediation_attempts_total.
type metricsReporter struct{ m *monitor.RemediationMetrics }

// Report implements journal.Reporter.
func (r metricsReporter) Report(_ context.Context, rep journal.Report) {
	r.m.Observe(rep.Action, rep.Result)
}

func (d *daemonRemediation) addFlags(fs *pflag.FlagSet) {
	b := binder{fs}
	fs.StringVar(&d.policyFile, "policy", "", "remediation policy file (YAML, strict); empty: no remediation. The policy is a dry run unless it sets dryRun: false")
	b.str(&d.cfg.Actions.StateDir, "actions.stateDir", "state-dir", "node path of evictguard's journal, backups and restart log")
	b.str(&d.cfg.Actions.KubeletUnit, "actions.kubeletUnit", "unit", "the kubelet's systemd unit")
	b.str(&d.cfg.Actions.SystemdBus, "actions.systemdBus", "bus-address", "D-Bus address of the systemd manager (default: the system bus)")
	b.str(&d.cfg.Actions.Healthz, "actions.healthz", "healthz", "kubelet /healthz URL checked after a restart")
}

// flags are the apply flags for the daemon's options.
func (d *daemonRemediation) flags(o *runOptions) remediationFlags {
	var observed func() *monitor.Snapshot
	if d.last != nil {
		observed = d.last.Load
	}
	return remediationFlags{
		observed: observed,
		// The daemon's settings (state dir, unit, bus, /configz, healthz, kubeconfig) are its
		// configuration's.
		monitorFlags: o.monitorFlags, policyFile: d.policyFile,
		policy: d.Policy, reporter: d.reporter, rediscover: d.rediscover,
		// One way to execute, from a pod or a systemd unit: the operation's own unit on
		// the host outlives this process (docs/remediation.md, "Where the work runs").
		execute: execHost,
	}
}

// load reads and validates --policy (before anything starts, so that a bad file is a usage
// error).
func (d *daemonRemediation) load() error {
	if d.Policy != nil || d.policyFile == "" {
		return nil
	}
	p, err := loadPolicy(d.policyFile)
	if err != nil {
		return usageErr(err)
	}
	d.Policy = p
	return nil
}

// start registers the trigger and starts the remediation worker, which first recovers (or
// adopts) interrupted operations; a no-op without a policy.
// Call load first.
func (d *daemonRemediation) start(ctx context.Context, g *globalOptions, o *runOptions, out *outputs) {
	if d.Policy == nil {
		return
	}
	d.last = &atomic.Pointer[monitor.Snapshot]{}
	f := d.flags(o)
	d.prev = map[string]monitor.State{}
	d.trigger = make(chan struct{}, 1)
	d.escalation = &atomic.Pointer[reclaim.Escalation]{}
	// Before the first snapshot reaches the reclaim ladder's worker, which reads it.
	o.logs.escalator = d
	out.notifiers = append(out.notifiers, d.notify)
	out.goRun(func() {
		// Before any pass, and off the daemon's start: adopting a migration that runs on
		// the host follows it to its end, while monitoring and the metrics go on.
		if err := d.recover(ctx, g, &f); err != nil && ctx.Err() == nil {
			// Not fatal for monitoring: the operation stays in the journal and apply refuses to act.
			g.logger.Error("recovering interrupted remediation failed", "err", err)
		}
		pending := time.NewTicker(reportPendingEvery)
		defer pending.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-pending.C:
				d.reportPending(ctx, g, &f)
				continue
			case <-d.trigger:
			}
			pass := f
			pass.policy = d.live.get(f.policy)
			if esc := d.escalation.Swap(nil); esc != nil {
				if err := escalationPass(ctx, g, pass, esc); err != nil && ctx.Err() == nil {
					g.logger.Warn("remediation pass (escalation) did not apply", "err", err)
				}
				continue
			}
			// Blocked, refused, rolled back and failed passes are reported (log, Event) inside.
			if err := runApply(ctx, g, &applyOptions{remediationFlags: pass, yes: true}); err != nil && ctx.Err() == nil {
				g.logger.Warn("remediation pass did not apply", "err", err)
			} else if err == nil {
				g.logger.Info("remediation pass finished")
			}
		}
	})
	g.logger.Info("remediation enabled", "policyFile", f.policyFile, "dryRun", f.policy.Dry(), "stateDir", f.cfg.Actions.StateDir, "unit", f.cfg.Actions.KubeletUnit)
}

// reportPendingEvery is how often the worker reports again what ended without its outcome
// reaching the API server (it was away).
const reportPendingEvery = 5 * time.Minute

// reportPending reports the migrations that ended but were not delivered: cheap when there
// are none (the journal is read locally).
func (d *daemonRemediation) reportPending(ctx context.Context, g *globalOptions, f *remediationFlags) {
	j, err := journal.Open(g.root(), f.cfg.Actions.StateDir, g.logger)
	if err != nil {
		return
	}
	ops, err := j.Unreported(journal.KindMigrateDataRoot, time.Now().Add(-24*time.Hour))
	if err != nil || len(ops) == 0 {
		return
	}
	r, err := f.prepare(ctx, g)
	if err != nil {
		g.logger.Warn("could not report the operations that ended unreported", "err", err)
		return
	}
	if r.sd != nil {
		defer r.sd.Close()
	}
	o := &applyOptions{remediationFlags: *f}
	reportUnreported(ctx, g, r.journal, o.executor(g, r, "").Reporter)
}

// notify triggers a remediation pass when a signal enters warning or breached (never blocks:
// a pass already pending absorbs the trigger).
func (d *daemonRemediation) notify(s *monitor.Snapshot) {
	if d.last != nil {
		d.last.Store(s)
	}
	fire := false
	for _, sig := range s.Signals {
		key := sig.Signal + "/" + sig.Kind
		if prev, ok := d.prev[key]; sig.State != prev && (sig.State == monitor.StateWarning || sig.State == monitor.StateBreached) {
			fire = fire || !ok || prev != monitor.StateBreached
		}
		d.prev[key] = sig.State
	}
	if fire {
		select {
		case d.trigger <- struct{}{}:
		default:
		}
	}
}

// recover finishes or rolls back operations a crash left in progress.
func (d *daemonRemediation) recover(ctx context.Context, g *globalOptions, f *remediationFlags) error {
	r, err := f.prepare(ctx, g)
	if err != nil {
		return err
	}
	if r.sd != nil {
		defer r.sd.Close()
	}
	o := &applyOptions{remediationFlags: *f}
	exec := o.executor(g, r, "")
	// Last, whatever happened before: what ended on the host while nobody followed.
	defer reportUnreported(ctx, g, r.journal, exec.Reporter)
	unfinished, err := r.journal.Unfinished()
	if err != nil || len(unfinished) == 0 {
		return err
	}
	if r.sd == nil {
		return fmt.Errorf("%d interrupted operation(s) but systemd is unreachable over D-Bus", len(unfinished))
	}
	exec.Verify = o.verifier(g, r, f.cfg.Monitor.KubeletVersion)
	g.logger.Warn("recovering interrupted remediation", "operations", len(unfinished))
	// A threshold rewrite by the executor; a migration as `evictguard migrate --resume`
	// (adopted when its unit still runs on the host).
	return errors.Join(exec.Recover(ctx), f.recoverMigration(ctx, g, r, exec.Reporter))
}

// escalationPass is the remediation pass the reclaim ladder's escalation triggers: plan and
// gates as in `evictguard plan`, the outcome reported (log, Node Event, remediation metrics)
// as the escalation's answer, and, when the plan may act and the policy is not a dry run,
// the journaled apply of `evictguard apply --yes` (which re-plans under the same gates).
func escalationPass(ctx context.Context, g *globalOptions, f remediationFlags, esc *reclaim.Escalation) error {
	r, err := f.prepare(ctx, g)
	if err != nil {
		return err
	}
	if r.sd != nil {
		defer r.sd.Close()
	}
	if err := f.plan(ctx, g, r); err != nil {
		return err
	}
	ao := &applyOptions{remediationFlags: f, yes: true}
	rep, apply := escalationOutcome(esc, r.tp, r.mig, r.blockers, r.policy.Dry(), r.setup.layout)
	switch {
	case !apply:
		journal.MultiReporter{journal.LogReporter{Log: g.logger}, ao.executor(g, r, "").Reporter}.Report(ctx, rep)
	case rep.Result == journal.ResultTriggered:
		// The escalation's answer: log and Node Event; the attempt itself is counted (and
		// reported again) with its outcome by the apply.
		reps := journal.MultiReporter{journal.LogReporter{Log: g.logger}}
		if r.kube != nil && f.cfg.Kubernetes.NodeName != "" {
			reps = append(reps, remediate.EventReporter{Client: r.kube, Node: f.cfg.Kubernetes.NodeName, Log: g.logger})
		}
		reps.Report(ctx, rep)
	}
	if !apply {
		return nil
	}
	g.logger.Info("remediation pass (escalation): applying", "reason", rep.Reason)
	return runApply(ctx, g, ao)
}

// escalationOutcome decides what an escalation's pass does with the plan: report it
// (blocked: refusals, gates or nothing to rewrite; dry-run: what would be written) or apply
// it (apply=true; the apply reports its own outcome). The reason says what escalated and,
// when imagefs shares nodefs, that a data-root migration is the lasting fix: the daemon
// never migrates by itself (it needs a target disk and stops the runtime).
//
// When the policy allows a data-root migration and its preflight passes, the migration is the
// answer (it gives real headroom; the threshold rewrite is re-planned after it): reported as
// migrate-data-root, started (applied: the apply reports its outcome), dry-run or blocked.
func escalationOutcome(esc *reclaim.Escalation, tp *remediate.ThresholdPlan, mig *remediate.MigrationDecision, blockers []string, dry bool, layout *monitor.Layout) (journal.Report, bool) {
	head := fmt.Sprintf("escalated by the reclaim ladder (%s headroom %.1f MiB", esc.Signal, float64(esc.Headroom)/(1<<20))
	if esc.SecondsToThreshold != nil {
		head += fmt.Sprintf(", threshold in %.0fs", *esc.SecondsToThreshold)
	}
	head += ")"
	if mig.Act() {
		sum := migrationSummary(mig.Preflight)
		rep := journal.Report{Action: journal.KindMigrateDataRoot}
		switch {
		case len(blockers) > 0:
			rep.Result, rep.Reason = journal.ResultBlocked, head+"; not migrating the "+sum+": "+strings.Join(blockers, "; ")
			return rep, false
		case dry:
			rep.Result, rep.Reason = journal.ResultDryRun, head+"; dry run: would migrate the "+sum
			return rep, false
		}
		rep.Result, rep.Reason = journal.ResultTriggered, head+"; triggered the migration of the "+sum
		return rep, true
	}
	rep := journal.Report{Action: journal.KindThresholdRewrite, Old: tp.Old, New: tp.New}
	var changes []string
	for _, sig := range slices.Sorted(maps.Keys(tp.Changes)) {
		changes = append(changes, sig+"<"+tp.Changes[sig])
	}
	apply := false
	switch not := append(slices.Clone(tp.Refusals), blockers...); {
	case len(not) > 0:
		rep.Result, rep.Reason = journal.ResultBlocked, head+"; not rewriting thresholds: "+strings.Join(not, "; ")
	case len(changes) == 0:
		rep.Result, rep.Reason = journal.ResultBlocked, head+"; nothing to rewrite: every hard disk threshold keeps its target headroom"
	case dry:
		rep.Result, rep.Reason = journal.ResultDryRun, head+"; dry run: would lower "+strings.Join(changes, ",")
	default:
		apply, rep.Reason = true, head+"; lowering "+strings.Join(changes, ",")
	}
	if layout != nil && !layout.DedicatedImageFs {
		why := "the policy does not allow it (policy.migration.to)"
		if mig != nil && len(mig.Refusals) > 0 {
			why = strings.Join(mig.Refusals, "; ")
		}
		rep.Reason += "; imagefs shares nodefs: moving the runtime's data root to another disk is the lasting fix (evictguard migrate, or policy.migration in the daemon), not done now: " + why
	}
	return rep, apply
}
