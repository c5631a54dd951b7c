package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/lease"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/remediate"
)

// migrateOptions builds the options of `evictguard migrate` from the policy's migration
// section and the remediation flags, so that plan, apply and the daemon run the same
// preflight and the same journaled migration as the command.
func (f *remediationFlags) migrateOptions(g *globalOptions, r *remediation, runtime string) (migration.Options, error) {
	mp := &r.policy.Migration
	mo := migration.Options{
		Root: g.root(), Runtime: runtime, Target: mp.To, DockerSocket: f.cfg.Monitor.DockerSocket,
		RuntimeUnits: mp.Units, KubeletUnit: f.cfg.Actions.KubeletUnit, KubeletHealthz: f.cfg.Actions.Healthz, StableFor: r.policy.StableFor.Duration,
		UnitTimeout: mp.UnitTimeout.Duration, KeepOld: mp.KeepOld, Checksums: mp.Checksums,
		Drain: mp.Drain, DrainTimeout: mp.DrainTimeout.Duration, Kube: r.kube, NodeName: f.cfg.Kubernetes.NodeName,
		Journal: r.journal, Log: g.logger,
	}
	if r.sd != nil {
		mo.Systemd = r.sd
	}
	switch runtime {
	case migration.RuntimeDocker:
		mo.DockerConfig = mp.Config
	case migration.RuntimeContainerd:
		mo.ContainerdConfig = mp.Config
	}
	var err error
	if mo.MarginBytes, mo.MarginPercent, err = mp.Margin(); err != nil {
		return mo, fmt.Errorf("policy migration.minFree: %w", err)
	}
	if r.policy.Lock.Slots > 0 {
		mo.Lock = &lease.Lock{Client: r.kube, Namespace: r.policy.Lock.Namespace, Name: r.policy.Lock.Name,
			Slots: r.policy.Lock.Slots, TTL: mp.LockTTL.Duration, Identity: f.cfg.Kubernetes.NodeName}
	}
	migrateHooks(g, &mo)
	return mo, nil
}

// planMigration adds the data-root migration decision to r: the planner's conditions, then,
// when they hold, the preflight of `evictguard migrate` and the exact config diff.
func (f *remediationFlags) planMigration(ctx context.Context, g *globalOptions, r *remediation) {
	d := remediate.PlanMigrationAction(r.policy, r.setup.layout, r.snap.Signals)
	r.mig = d
	if !d.NeedsPreflight() {
		return
	}
	mo, err := f.migrateOptions(g, r, d.Runtime)
	if err != nil {
		d.Refusals = append(d.Refusals, err.Error())
		return
	}
	plan, err := migration.NewPlan(ctx, mo)
	if err != nil {
		d.Refusals = append(d.Refusals, "migration preflight failed: "+err.Error())
		return
	}
	d.AddPreflight(plan)
	if plan.Config == "" {
		return
	}
	before, err := os.ReadFile(g.root().Path(plan.Config))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		d.Refusals = append(d.Refusals, fmt.Sprintf("read %s: %v", plan.Config, err))
		return
	}
	after, err := migration.SetRuntimeRoot(plan.Runtime, before, plan.To)
	if err != nil {
		d.Refusals = append(d.Refusals, fmt.Sprintf("%s: %v", plan.Config, err))
		return
	}
	r.migDiff = journal.UnifiedDiff(plan.Config, before, after)
}

// printMigrationDecision prints the migration part of a plan: the reasons, and for an offered
// migration the preflight (sizes, expected downtime) and the config diff.
func printMigrationDecision(w io.Writer, g *globalOptions, r *remediation) {
	d := r.mig
	if d == nil {
		return
	}
	fmt.Fprintln(w, "Data-root migration:")
	for _, s := range d.Reasons {
		fmt.Fprintln(w, "  "+s)
	}
	for _, s := range d.Refusals {
		fmt.Fprintln(w, "  refused: "+s)
	}
	if d.Preflight != nil && d.Preflight.OK() {
		var b strings.Builder
		pg := *g
		pg.stdout, pg.output = &b, ""
		_ = printMigrationPlan(&pg, d.Preflight)
		b.WriteString(r.migDiff)
		for _, l := range strings.SplitAfter(b.String(), "\n") {
			if l != "" {
				fmt.Fprint(w, "  "+l)
			}
		}
	}
	if d.Act() {
		fmt.Fprintln(w, "  preferred over a threshold rewrite: a migration gives nodefs real headroom; a rewrite only moves the line")
	}
}

// migrationReport reports a migration outcome as migrate-data-root (log, Event, metrics). It
// returns whether a reporter that can fail (the Node Event) did: the caller then leaves the
// operation unreported in the journal, to be reported again (reportUnreported).
func migrationReport(ctx context.Context, g *globalOptions, rep journal.Reporter, r journal.Report) error {
	r.Action = journal.KindMigrateDataRoot
	err := journal.MultiReporter{journal.LogReporter{Log: g.logger}, rep}.Deliver(ctx, r)
	if err != nil {
		g.logger.Warn("the outcome was not delivered everywhere; it is reported again later", "op", r.Op, "err", err)
	}
	return err
}

// reportEnded reports the outcome of the ended operation id and records it as reported once
// it was delivered.
func reportEnded(ctx context.Context, g *globalOptions, j *journal.Journal, rep journal.Reporter, r journal.Report) {
	if migrationReport(ctx, g, rep, r) == nil {
		markReported(g, j, r.Op)
	}
}

// markReported records in the journal that the ended operation id was reported, so that the
// next daemon does not report it again (reportUnreported).
func markReported(g *globalOptions, j *journal.Journal, id string) {
	op, err := j.Load(id)
	if err == nil && op.State != journal.StateInProgress && op.Reported == nil {
		err = j.MarkReported(op)
	}
	if err != nil {
		g.logger.Warn("could not record that the operation was reported", "op", id, "err", err)
	}
}

// reportUnreported reports the migrations that ended on the host while nobody followed them
// (the pod that started or adopted one was killed, or the runtime's stop took it down with
// the runtime) in the last day: the next daemon tells what happened, once.
func reportUnreported(ctx context.Context, g *globalOptions, j *journal.Journal, rep journal.Reporter) {
	ops, err := j.Unreported(journal.KindMigrateDataRoot, time.Now().Add(-24*time.Hour))
	if err != nil {
		g.logger.Warn("could not read the journal for unreported operations", "err", err)
		return
	}
	for _, op := range ops {
		r := journal.Report{Op: op.ID, Reason: "ended on the host while no evictguard followed it: " + lastNote(op)}
		switch op.State {
		case journal.StateDone:
			r.Result = journal.ResultApplied
		case journal.StateRolledBack:
			r.Result = journal.ResultRolledBack
		default:
			r.Result = journal.ResultFailed
		}
		if p, err := migration.PlanOf(op); err == nil {
			r.Reason = migrationSummary(p) + ": " + r.Reason
		}
		reportEnded(ctx, g, j, rep, r)
	}
}

// failedMigrationResult is how a migration that returned an error ended: rolled back (as the
// journal says) or failed.
func failedMigrationResult(j *journal.Journal, id string) string {
	if cur, err := j.Load(id); err == nil && cur.State == journal.StateRolledBack {
		return journal.ResultRolledBack
	}
	return journal.ResultFailed
}

func migrationSummary(p *migration.Plan) string {
	return fmt.Sprintf("%s data root %s → %s (%s, expected downtime ~%s)", p.Runtime, p.From, p.To,
		units.Bytes(p.Used.Bytes), p.EstimatedDowntime.Round(time.Second))
}

// applyMigration carries out an offered migration under the same gates as a threshold
// rewrite (windows, cooldown and restart budget, blockers, failed operations; the Lease is
// the migration's own lease step), through remediate.Migrate: the journal and steps of
// `evictguard migrate`.
func applyMigration(ctx context.Context, g *globalOptions, o *applyOptions, r *remediation, rep journal.Reporter) error {
	p := r.mig.Preflight
	sum := migrationSummary(p)
	if len(r.blockers) > 0 {
		reason := strings.Join(r.blockers, "; ")
		_ = migrationReport(ctx, g, rep, journal.Report{Result: journal.ResultBlocked, Reason: "not migrating " + sum + ": " + reason})
		return problem(errors.New("not applied: " + reason))
	}
	if r.policy.Dry() {
		_ = migrationReport(ctx, g, rep, journal.Report{Result: journal.ResultDryRun, Reason: "dry run: would migrate " + sum})
		fmt.Fprintln(g.stdout, "Dry run: nothing changed (set dryRun: false in the policy).")
		return nil
	}
	if !o.yes {
		fmt.Fprint(g.stdout, "Stop the runtime and the kubelet and move the data root? Type yes: ")
		if !confirmLine(os.Stdin) {
			return problem(errors.New("not confirmed"))
		}
	}
	mo, err := o.migrateOptions(g, r, p.Runtime)
	if err != nil {
		return usageErr(err)
	}
	x, err := migrationRunnerFor(g, &o.remediationFlags, r)
	if err != nil {
		return usageErr(err)
	}
	op, err := migration.Begin(mo, p)
	if err == nil {
		err = x.run(ctx, mo, op, actionResume)
	}
	if op != nil {
		// The kubelet was stopped and started: it counts against cooldown and budget.
		if rerr := r.journal.RecordRestart(time.Now()); rerr != nil {
			g.logger.Warn("could not record the restart", "err", rerr)
		}
	}
	if errors.Is(err, errStoppedFollowing) {
		// Signalled while the unit works: its outcome is reported by whoever follows next.
		return problem(fmt.Errorf("operation %s: %w", op.ID, err))
	}
	if err != nil {
		res, id := journal.ResultFailed, ""
		if op != nil {
			res, id = failedMigrationResult(r.journal, op.ID), op.ID
		}
		if op == nil {
			_ = migrationReport(ctx, g, rep, journal.Report{Result: res, Reason: sum + ": " + err.Error()})
			return problem(err)
		}
		reportEnded(ctx, g, r.journal, rep, journal.Report{Op: id, Result: res, Reason: sum + ": " + err.Error()})
		return problem(fmt.Errorf("operation %s: %w", op.ID, err))
	}
	reportEnded(ctx, g, r.journal, rep, journal.Report{Op: op.ID, Result: journal.ResultApplied, Reason: "migrated " + sum})
	if o.rediscover != nil {
		o.rediscover(ctx) // the daemon: its monitor follows imagefs to the new filesystem
	} else {
		// `evictguard apply` from a shell: a running `evictguard run` learns it from the
		// journal (run_follow.go).
		g.logger.Info("the data root moved: an evictguard run with the same --state-dir re-discovers its filesystems from the journal (imagefs is now on its own)", "to", p.To)
	}
	fmt.Fprintf(g.stdout, "Migrated (operation %s): %s data root is now %s.\n", op.ID, p.Runtime, p.To)
	return nil
}

// recoverMigration finishes an interrupted migration as `evictguard migrate --resume` does
// (migration.Resume: the steps after the last journaled one; a failure before the runtime runs
// on the new root rolls back). Nil when there is none.
func (f *remediationFlags) recoverMigration(ctx context.Context, g *globalOptions, r *remediation, rep journal.Reporter) error {
	op, err := migration.Unfinished(r.journal)
	if err != nil || op == nil {
		return err
	}
	if r.sd == nil {
		return fmt.Errorf("interrupted migration %s but systemd is unreachable over D-Bus", op.ID)
	}
	mo, err := f.migrateOptions(g, r, "")
	if err != nil {
		return err
	}
	crashed := op.Step // the run moves op on
	x, err := migrationRunnerFor(g, f, r)
	if err != nil {
		return err
	}
	// Running on the host (this daemon's predecessor was killed, or stopped with the
	// runtime): adopted and followed. Otherwise interrupted: resumed.
	how, reason := "resuming after a crash after step "+crashed, "migration finished after a crash after step "+crashed
	if st, err := x.host().Status(ctx, op.ID); err == nil && st.Running {
		how = "adopted while running on the host as " + st.Unit + " (after step " + crashed + ")"
		reason = "migration finished on the host, " + how
		g.logger.Info("adopting the data-root migration running on the host", "op", op.ID, "unit", st.Unit, "step", crashed)
	} else {
		g.logger.Warn("resuming an interrupted data-root migration", "op", op.ID, "step", crashed)
	}
	if f.rediscover != nil {
		// Finished or rolled back, the data root is settled; discovery at start may have
		// seen the runtime stopped mid-migration.
		defer f.rediscover(ctx)
	}
	err = x.run(ctx, mo, op, actionResume)
	if errors.Is(err, errStoppedFollowing) {
		return fmt.Errorf("migration %s: %w", op.ID, err)
	}
	if err != nil {
		reportEnded(ctx, g, r.journal, rep, journal.Report{Op: op.ID, Result: failedMigrationResult(r.journal, op.ID), Reason: how + ": " + err.Error()})
		return fmt.Errorf("resume migration %s: %w", op.ID, err)
	}
	if err := r.journal.RecordRestart(time.Now()); err != nil {
		g.logger.Warn("could not record the restart", "err", err)
	}
	reportEnded(ctx, g, r.journal, rep, journal.Report{Op: op.ID, Result: journal.ResultRecovered, Reason: reason})
	return nil
}

// migrationRunnerFor is the runner of f's migrations: where they execute (f.execute) and what a host
// unit needs to reach the same systemd, state dir and API server.
func migrationRunnerFor(g *globalOptions, f *remediationFlags, r *remediation) (*migrationRunner, error) {
	mode, err := resolveExecute(f.execute, hostexec.View{Root: g.root(), Bus: f.cfg.Actions.SystemdBus})
	if err != nil {
		return nil, err
	}
	return &migrationRunner{g: g, mode: mode, busAddress: f.cfg.Actions.SystemdBus, stateDir: f.cfg.Actions.StateDir, kubeconfig: f.cfg.Kubernetes.Kubeconfig, sd: r.sd}, nil
}
