package journal

import (
	"context"
	"errors"
	"log/slog"
)

// The kinds of operation the journal records (Operation.Kind, and Report.Action for them).
const (
	// KindThresholdRewrite is a kubelet eviction threshold change.
	KindThresholdRewrite = "threshold-rewrite"
	// KindMigrateDataRoot is a runtime data-root migration.
	KindMigrateDataRoot = "migrate-data-root"
)

// Result values of a Report.
const (
	ResultApplied    = "applied"
	ResultRolledBack = "rolled-back"
	ResultFailed     = "failed"
	ResultBlocked    = "blocked"
	ResultRecovered  = "recovered"
	// ResultDryRun: the action would have acted.
	ResultDryRun = "dry-run"
	// ResultTriggered: an escalation started a migration (its outcome is reported separately).
	ResultTriggered = "triggered"
)

// Report is one outcome of a remediation, for Events, metrics and logs.
type Report struct {
	Op     string // journal operation ID ("" when blocked before starting)
	Action string // a journal kind (KindThresholdRewrite, …) or a reclaim step
	Result string // ResultApplied, ResultRolledBack, ResultFailed, ResultBlocked, ResultRecovered
	Reason string
	Old    map[string]string
	New    map[string]string
}

// Reporter receives every outcome (Node Event, remediation counter, …). Implementations must
// not block for long; errors are theirs to log.
type Reporter interface {
	Report(ctx context.Context, r Report)
}

// LogReporter logs reports; it is always used in addition to the configured Reporter.
type LogReporter struct{ Log *slog.Logger }

// Report implements Reporter.
func (l LogReporter) Report(_ context.Context, r Report) {
	lvl := slog.LevelInfo
	if r.Result == ResultRolledBack || r.Result == ResultFailed {
		lvl = slog.LevelError
	}
	l.Log.Log(context.Background(), lvl, "remediation", "action", r.Action, "result", r.Result, "op", r.Op, "reason", r.Reason, "old", r.Old, "new", r.New)
}

// MultiReporter fans a Report out to several reporters.
type MultiReporter []Reporter

// Report implements Reporter.
func (m MultiReporter) Report(ctx context.Context, r Report) {
	for _, x := range m {
		if x != nil {
			x.Report(ctx, r)
		}
	}
}

// Deliverer is a Reporter whose delivery can fail (a Node Event through the API server): the
// caller learns whether the outcome arrived, and records it as reported only then, so that
// it is reported again later instead of lost.
type Deliverer interface {
	Deliver(ctx context.Context, r Report) error
}

// Deliver reports r to every reporter, through Deliver where a reporter is a Deliverer (also
// nested MultiReporters), and returns the deliveries' errors.
func (m MultiReporter) Deliver(ctx context.Context, r Report) error {
	var errs []error
	for _, x := range m {
		switch d := x.(type) {
		case nil:
		case Deliverer:
			if err := d.Deliver(ctx, r); err != nil {
				errs = append(errs, err)
			}
		default:
			x.Report(ctx, r)
		}
	}
	return errors.Join(errs...)
}
