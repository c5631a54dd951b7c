package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/sdbus"
)

// Steps of a threshold rewrite, in order, as recorded in the journal.
const (
	StepWrite   = "write"
	StepReload  = "reload"
	StepRestart = "restart"
	StepVerify  = "verify"
)

// Systemd is the part of the systemd D-Bus client the executor uses.
type Systemd interface {
	DaemonReload(ctx context.Context) error
	Restart(ctx context.Context, unit string, timeout time.Duration) error
	WaitHealthy(ctx context.Context, unit string, opts sdbus.HealthOptions) error
}

// Executor carries out a threshold rewrite: journal → write → daemon-reload → restart →
// health wait → verification, rolling back on any failure within Timeout.
type Executor struct {
	Journal *journal.Journal
	Systemd Systemd
	// Unit is the kubelet's unit (default kubelet.service).
	Unit string
	// Health is passed to WaitHealthy (URL, StableFor, Timeout).
	Health sdbus.HealthOptions
	// Verify checks that the kubelet enforces exactly want (argv, /configz, Node Ready); it
	// should retry until ctx ends.
	Verify func(ctx context.Context, want map[string]string) error
	// Timeout bounds restart + health + verification (default 2m) of the change and, again,
	// of the rollback.
	Timeout  time.Duration
	Log      *slog.Logger
	Reporter journal.Reporter
	// AfterStep, if set, runs after each journaled step (a test hook for crash safety).
	AfterStep func(step string)
}

func (e *Executor) unit() string {
	if e.Unit == "" {
		return "kubelet.service"
	}
	return e.Unit
}

func (e *Executor) report(ctx context.Context, r journal.Report) {
	r.Action = journal.KindThresholdRewrite
	if e.Log != nil {
		journal.LogReporter{Log: e.Log}.Report(ctx, r)
	}
	if e.Reporter != nil {
		e.Reporter.Report(ctx, r)
	}
}

func (e *Executor) step(op *journal.Operation, step, note string) error {
	if err := e.Journal.Step(op, step, note); err != nil {
		return err
	}
	if e.AfterStep != nil {
		e.AfterStep(step)
	}
	return nil
}

// Apply writes plan's files and restarts the kubelet so it enforces newHard; oldHard is what
// it enforced before (verified again after a rollback). It returns the operation and an error
// when the change was not applied (the operation then says rolled-back or failed).
func (e *Executor) Apply(ctx context.Context, plan *kubeletcfg.WritePlan, oldHard, newHard map[string]string) (*journal.Operation, error) {
	files := make([]string, 0, len(plan.Files))
	for _, f := range plan.Files {
		files = append(files, f.Path)
	}
	op, err := e.Journal.Begin(journal.KindThresholdRewrite, map[string]any{
		"method": string(plan.Method), "unit": e.unit(), "old": oldHard, "new": newHard, "files": files,
		"unitChanged": plan.UnitChanged,
	})
	if err != nil {
		return nil, err
	}
	for _, f := range plan.Files {
		if err := e.Journal.WriteFile(op, f.Path, f.After, f.Perm); err != nil {
			return op, e.rollback(ctx, op, oldHard, newHard, fmt.Errorf("write: %w", err))
		}
	}
	if err := e.step(op, StepWrite, fmt.Sprintf("%d file(s) via %s", len(plan.Files), plan.Method)); err != nil {
		return op, e.rollback(ctx, op, oldHard, newHard, err)
	}
	return op, e.finishForward(ctx, op, StepWrite, oldHard, newHard)
}

// finishForward continues an operation from the step after `from`.
func (e *Executor) finishForward(ctx context.Context, op *journal.Operation, from string, oldHard, newHard map[string]string) error {
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	deadline, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if from == StepWrite {
		if err := e.Systemd.DaemonReload(deadline); err != nil {
			return e.rollback(ctx, op, oldHard, newHard, err)
		}
		if err := e.step(op, StepReload, ""); err != nil {
			return e.rollback(ctx, op, oldHard, newHard, err)
		}
		from = StepReload
	}
	if from == StepReload {
		restartErr := e.Systemd.Restart(deadline, e.unit(), timeout)
		if err := e.Journal.RecordRestart(time.Now()); err != nil {
			e.Log.Warn("could not record the restart", "err", err)
		}
		if restartErr != nil {
			return e.rollback(ctx, op, oldHard, newHard, restartErr)
		}
		if err := e.step(op, StepRestart, ""); err != nil {
			return e.rollback(ctx, op, oldHard, newHard, err)
		}
	}
	h := e.Health
	h.Timeout = time.Until(deadlineOf(deadline))
	if err := e.Systemd.WaitHealthy(deadline, e.unit(), h); err != nil {
		return e.rollback(ctx, op, oldHard, newHard, fmt.Errorf("kubelet not healthy after the change: %w", err))
	}
	if err := e.Verify(deadline, newHard); err != nil {
		return e.rollback(ctx, op, oldHard, newHard, fmt.Errorf("new thresholds not effective: %w", err))
	}
	if err := e.step(op, StepVerify, "kubelet healthy and enforcing the new thresholds"); err != nil {
		return err
	}
	if err := e.Journal.Finish(op, journal.StateDone, ""); err != nil {
		return err
	}
	e.report(ctx, journal.Report{Op: op.ID, Result: journal.ResultApplied, Reason: "kubelet restarted and verified", Old: oldHard, New: newHard})
	return nil
}

func deadlineOf(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(2 * time.Minute)
	}
	return d
}

// ErrRolledBack wraps the cause of a change that was undone.
var ErrRolledBack = errors.New("change rolled back")

// ErrRollbackFailed means the node could not be brought back to its old state; the operation is
// marked failed and evictguard refuses to act until it is cleared.
var ErrRollbackFailed = errors.New("rollback failed")

// rollback restores the files, reloads, restarts and verifies the old thresholds.
func (e *Executor) rollback(ctx context.Context, op *journal.Operation, oldHard, newHard map[string]string, cause error) error {
	e.Log.Error("threshold change failed; rolling back", "op", op.ID, "err", cause)
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	fail := func(err error) error {
		note := fmt.Sprintf("change failed (%v) and rollback failed (%v)", cause, err)
		if ferr := e.Journal.Finish(op, journal.StateFailed, note); ferr != nil {
			e.Log.Error("could not mark the operation failed", "op", op.ID, "err", ferr)
		}
		e.report(ctx, journal.Report{Op: op.ID, Result: journal.ResultFailed, Reason: note, Old: oldHard, New: newHard})
		return fmt.Errorf("%w: %w (cause: %w)", ErrRollbackFailed, err, cause)
	}
	if err := e.Journal.RestoreFiles(op); err != nil {
		return fail(err)
	}
	if err := e.Systemd.DaemonReload(deadline); err != nil {
		return fail(err)
	}
	if err := e.Systemd.Restart(deadline, e.unit(), timeout); err != nil {
		return fail(err)
	}
	if err := e.Journal.RecordRestart(time.Now()); err != nil {
		e.Log.Warn("could not record the restart", "err", err)
	}
	h := e.Health
	h.Timeout = time.Until(deadlineOf(deadline))
	if err := e.Systemd.WaitHealthy(deadline, e.unit(), h); err != nil {
		return fail(fmt.Errorf("kubelet not healthy on the old settings: %w", err))
	}
	if err := e.Verify(deadline, oldHard); err != nil {
		return fail(fmt.Errorf("old thresholds not effective: %w", err))
	}
	note := fmt.Sprintf("rolled back: %v", cause)
	if err := e.Journal.Finish(op, journal.StateRolledBack, note); err != nil {
		return err
	}
	e.report(ctx, journal.Report{Op: op.ID, Result: journal.ResultRolledBack, Reason: cause.Error(), Old: oldHard, New: newHard})
	return fmt.Errorf("%w: %w", ErrRolledBack, cause)
}

// Recover finishes or rolls back every operation a crash left in progress: when every file
// holds the new content, the remaining steps are carried out and verified; otherwise (or when
// that fails) the files are restored and the old state verified. A file changed by someone
// else since marks the operation failed.
func (e *Executor) Recover(ctx context.Context) error {
	ops, err := e.Journal.Unfinished()
	if err != nil {
		return err
	}
	var errs []error
	for _, op := range ops {
		if op.Kind != journal.KindThresholdRewrite {
			continue
		}
		oldHard, newHard := mapData(op.Data["old"]), mapData(op.Data["new"])
		e.Log.Warn("recovering an interrupted operation", "op", op.ID, "step", op.Step)
		allAfter, unknown := op.Step != "", false
		for _, fc := range op.Files {
			switch e.Journal.FileState(fc) {
			case "after":
			case "unknown":
				unknown = true
				allAfter = false
			default:
				allAfter = false
			}
		}
		var rerr error
		switch {
		case unknown:
			rerr = fmt.Errorf("operation %s: a file was changed by someone else since; not touching it", op.ID)
			_ = e.Journal.Finish(op, journal.StateFailed, rerr.Error())
			e.report(ctx, journal.Report{Op: op.ID, Result: journal.ResultFailed, Reason: rerr.Error(), Old: oldHard, New: newHard})
		case allAfter:
			crashed := op.Step
			from := crashed
			if from == StepVerify {
				from = StepRestart
			}
			rerr = e.finishForward(ctx, op, from, oldHard, newHard)
			if rerr == nil {
				e.report(ctx, journal.Report{Op: op.ID, Result: journal.ResultRecovered, Reason: "finished after a crash after step " + crashed, Old: oldHard, New: newHard})
			}
		default:
			rerr = e.rollback(ctx, op, oldHard, newHard, fmt.Errorf("interrupted at step %q before every file was written", op.Step))
			if errors.Is(rerr, ErrRolledBack) {
				rerr = nil
			}
		}
		if rerr != nil {
			errs = append(errs, rerr)
		}
	}
	return errors.Join(errs...)
}

func mapData(v any) map[string]string {
	out := map[string]string{}
	switch m := v.(type) {
	case map[string]string:
		maps.Copy(out, m)
	case map[string]any:
		for k, x := range m {
			out[k] = fmt.Sprint(x)
		}
	}
	return out
}
