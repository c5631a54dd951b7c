package reclaim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/monitor"
)

// Reclaim steps, in the order the ladder climbs them. They are also the journal.Report actions.
const (
	StepBallast  = "reclaim-ballast"
	StepGC       = "reclaim-runtime-gc"
	StepLogs     = "reclaim-rotated-logs"
	StepEscalate = "reclaim-escalate"
	// BallastRecreate is reported when the ballast is put back.
	BallastRecreate = "ballast-recreate"
)

// LadderSteps is the ladder, in order.
var LadderSteps = []string{StepBallast, StepGC, StepLogs, StepEscalate}

// Policy gates the ladder.
type Policy struct {
	// DryRun reports what each step would do and changes nothing.
	DryRun bool
	// Allow lists the steps that may act (StepBallast, StepGC, StepLogs,
	// StepEscalate); others are reported as blocked. Re-creating the ballast follows
	// StepBallast.
	Allow []string
	// Horizon: the ladder climbs while the predicted time to the threshold is shorter
	// (default 1h).
	Horizon time.Duration
	// LowHeadroom: the ladder also climbs while headroom is below this many bytes, whatever
	// the prediction.
	LowHeadroom int64
	// RecreateCooldown is the least time between releasing the ballast and re-creating it
	// (default 5m), on top of the headroom hysteresis, so a disk that is still filling does
	// not get its reserve back only to release it again.
	RecreateCooldown time.Duration
}

// Escalation is the ladder's last step: local reclaim was not enough; the daemon should
// consider the data-root migration or a threshold rewrite (their own policies apply).
type Escalation struct {
	Signal             string   `json:"signal"`
	Headroom           int64    `json:"headroomBytes"`
	SecondsToThreshold *float64 `json:"secondsToThreshold"`
	// Suggest names the actions to consider, most specific first.
	Suggest []string `json:"suggest"`
}

// Escalator acts on an escalation, e.g. by queuing the daemon's remediation pass (plan,
// gates, journaled apply under the remediation policy). It must not block for long; it
// returns what it triggered, for the report.
type Escalator interface {
	Escalate(ctx context.Context, e Escalation) (triggered string, err error)
}

// EscalateEvery is the least time between two escalations (and their reports) while the
// danger lasts.
const EscalateEvery = time.Minute

// Action is one step's outcome.
type Action struct {
	Step   string   `json:"step"`
	Result string   `json:"result"` // journal.ResultApplied, journal.ResultDryRun, journal.ResultBlocked, journal.ResultFailed
	Bytes  int64    `json:"bytes"`  // reclaimed (measured by statfs when FsPath is set)
	Items  []string `json:"items,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

// LadderResult is what one Step did.
type LadderResult struct {
	// Danger says the guarded signal was predicted to reach its threshold within the horizon
	// (or headroom was below LowHeadroom) when the step began.
	Danger bool
	// Headroom before and after (bytes; after is measured when FsPath is set).
	HeadroomBefore, HeadroomAfter int64
	Actions                       []Action
	// Escalate is set when the ladder ran out of local steps.
	Escalate *Escalation
}

// RuntimeGC is a runtime garbage collector: DockerGC or CRIGC.
type RuntimeGC interface {
	// Plan lists what Run would remove.
	Plan(ctx context.Context) ([]GCItem, error)
	// Run removes it and returns what was removed.
	Run(ctx context.Context) ([]GCItem, error)
}

// Ladder keeps a filesystem away from its eviction threshold by climbing, in order:
// release the ballast, runtime GC, rotated-log compression, escalation. It stops as soon as
// the prediction is back beyond the horizon. Nil components are skipped.
type Ladder struct {
	Policy Policy
	// Signal is the guarded signal (default nodefs.available).
	Signal string
	// FsPath is a path on the guarded filesystem as this process sees it; when set, headroom
	// is re-measured with statfs after each step and reclaimed bytes are measured, not
	// estimated.
	FsPath  string
	Ballast *Ballast
	GC      RuntimeGC
	Logs    *RotatedLogs
	// Escalator is called by the escalation step when the policy allows it; without one the
	// step is reported as blocked (nothing to escalate to).
	Escalator Escalator

	Reporter journal.Reporter
	Log      *slog.Logger

	bytes     *prometheus.CounterVec
	actions   *prometheus.CounterVec
	escalated time.Time
	released  time.Time
}

// RegisterMetrics registers evictguard_reclaimed_bytes_total{action} and
// evictguard_reclaim_actions_total{action,result}.
func (l *Ladder) RegisterMetrics(reg prometheus.Registerer) error {
	l.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "evictguard", Name: "reclaimed_bytes_total",
		Help: "Bytes given back by the reclaim ladder, by step."}, []string{"action"})
	l.actions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "evictguard", Name: "reclaim_actions_total",
		Help: "Reclaim ladder steps taken, by step and result."}, []string{"action", "result"})
	for _, c := range []prometheus.Collector{l.bytes, l.actions} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register reclaim metrics: %w", err)
		}
	}
	return nil
}

func (l *Ladder) log() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}

func (l *Ladder) signal() string {
	if l.Signal == "" {
		return "nodefs.available"
	}
	return l.Signal
}

func (l *Ladder) horizon() time.Duration {
	if l.Policy.Horizon <= 0 {
		return time.Hour
	}
	return l.Policy.Horizon
}

func (l *Ladder) allowed(step string) bool { return slices.Contains(l.Policy.Allow, step) }

// danger decides whether to climb at this headroom and fill rate (bytes/s, positive =
// filling).
func (l *Ladder) danger(headroom int64, rate *float64) bool {
	if headroom <= 0 || headroom < l.Policy.LowHeadroom {
		return true
	}
	return rate != nil && *rate > 0 && float64(headroom)/(*rate) < l.horizon().Seconds()
}

// headroomNow re-measures headroom with statfs; ok=false when FsPath is unset or fails.
func (l *Ladder) headroomNow(threshold int64) (int64, bool) {
	if l.FsPath == "" {
		return 0, false
	}
	var st unix.Statfs_t
	if err := unix.Statfs(l.FsPath, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail)*st.Frsize - threshold, true
}

// Step evaluates the guarded signal in snap and climbs the ladder as far as needed. It also
// re-creates the ballast when the danger is over by a margin.
func (l *Ladder) Step(ctx context.Context, snap *monitor.Snapshot) (*LadderResult, error) {
	if snap == nil {
		return nil, errors.New("ladder: no snapshot")
	}
	i := slices.IndexFunc(snap.Signals, func(s monitor.SignalStatus) bool { return s.Signal == l.signal() })
	if i < 0 {
		return nil, fmt.Errorf("ladder: signal %s not observed", l.signal())
	}
	sig := snap.Signals[i]
	if sig.State == monitor.StateUnknown || sig.Error != "" {
		return nil, fmt.Errorf("ladder: signal %s unknown: %s", sig.Signal, sig.Error)
	}
	headroom := sig.Headroom
	if h, ok := l.headroomNow(sig.ThresholdQuantity); ok {
		headroom = h
	}
	res := &LadderResult{HeadroomBefore: headroom, HeadroomAfter: headroom}
	res.Danger = l.danger(headroom, sig.FillRate)
	if !res.Danger {
		l.maybeRecreate(ctx, res, headroom, sig.FillRate)
		return res, nil
	}
	for _, step := range LadderSteps {
		if !l.danger(headroom, sig.FillRate) {
			break
		}
		if step == StepEscalate && time.Since(l.escalated) < EscalateEvery {
			// Escalation would repeat every cycle while in danger: act and report once per
			// EscalateEvery; meanwhile the result still says local reclaim is exhausted.
			res.Escalate = l.escalation(sig, headroom)
			continue
		}
		act := l.climb(ctx, step, sig, headroom, res)
		if act == nil {
			continue
		}
		if step == StepEscalate {
			l.escalated = time.Now()
		}
		if h, ok := l.headroomNow(sig.ThresholdQuantity); ok {
			if act.Result == journal.ResultApplied && step != StepEscalate {
				act.Bytes = max(act.Bytes, h-headroom)
			}
			headroom = h
		} else if act.Result == journal.ResultApplied {
			headroom += act.Bytes
		}
		res.Actions = append(res.Actions, *act)
		l.report(ctx, *act, sig.Signal, headroom)
	}
	res.HeadroomAfter = headroom
	return res, nil
}

// climb runs one step; nil means the step has nothing to do (skip silently).
func (l *Ladder) climb(ctx context.Context, step string, sig monitor.SignalStatus, headroom int64, res *LadderResult) *Action {
	act := &Action{Step: step}
	switch step {
	case StepBallast:
		if l.Ballast == nil {
			return nil
		}
		st, err := l.Ballast.State()
		if err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
			return act
		}
		if !st.Present {
			return nil
		}
		act.Items = []string{l.Ballast.Path}
		if !l.gate(act, st.Allocated) {
			return act
		}
		n, err := l.Ballast.Release()
		if err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
			return act
		}
		l.released = time.Now()
		act.Result, act.Bytes = journal.ResultApplied, n
	case StepGC:
		if l.GC == nil {
			return nil
		}
		plan, err := l.GC.Plan(ctx)
		if err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
			return act
		}
		if len(plan) == 0 {
			return nil
		}
		act.Items = gcNames(plan)
		if !l.gate(act, gcBytes(plan)) {
			return act
		}
		done, err := l.GC.Run(ctx)
		act.Items, act.Bytes, act.Result = gcNames(done), gcBytes(done), journal.ResultApplied
		if err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
		}
	case StepLogs:
		if l.Logs == nil {
			return nil
		}
		cands, err := l.Logs.Candidates()
		if err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
			return act
		}
		if len(cands) == 0 {
			return nil
		}
		var est int64
		for _, c := range cands {
			act.Items = append(act.Items, c.Path)
			est += c.Size
		}
		if !l.gate(act, est) {
			return act
		}
		done, err := l.Logs.Reclaim(cands)
		act.Items, act.Bytes, act.Result = nil, 0, journal.ResultApplied
		for _, c := range done {
			act.Items = append(act.Items, c.Path)
			act.Bytes += c.Bytes
		}
		if err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
		}
	case StepEscalate:
		res.Escalate = l.escalation(sig, headroom)
		switch {
		case !l.allowed(step):
			act.Result, act.Reason = journal.ResultBlocked, "local reclaim exhausted; escalation not allowed by policy"
		case l.Policy.DryRun:
			act.Result, act.Reason = journal.ResultDryRun, "dry run: local reclaim exhausted; would escalate to the remediation pass"
		case l.Escalator == nil:
			act.Result, act.Reason = journal.ResultBlocked, "local reclaim exhausted; no remediation policy to escalate to"
		default:
			what, err := l.Escalator.Escalate(ctx, *res.Escalate)
			if err != nil {
				act.Result, act.Reason = journal.ResultFailed, "local reclaim exhausted; escalation failed: "+err.Error()
				return act
			}
			act.Result, act.Reason = journal.ResultApplied, "local reclaim exhausted; escalated: "+what
		}
	}
	return act
}

func (l *Ladder) escalation(sig monitor.SignalStatus, headroom int64) *Escalation {
	return &Escalation{Signal: sig.Signal, Headroom: headroom, SecondsToThreshold: sig.SecondsToThreshold,
		Suggest: []string{journal.KindMigrateDataRoot, journal.KindThresholdRewrite}}
}

// gate applies the policy to a step that would reclaim about est bytes; false means stop
// here (the action is filled in).
func (l *Ladder) gate(act *Action, est int64) bool {
	switch {
	case !l.allowed(act.Step):
		act.Result, act.Bytes, act.Reason = journal.ResultBlocked, est, "step not allowed by policy"
		return false
	case l.Policy.DryRun:
		act.Result, act.Bytes, act.Reason = journal.ResultDryRun, est, "dry run: would reclaim about this much"
		return false
	}
	return true
}

func (l *Ladder) maybeRecreate(ctx context.Context, res *LadderResult, headroom int64, rate *float64) {
	if l.Ballast == nil || !l.allowed(StepBallast) {
		return
	}
	cooldown := l.Policy.RecreateCooldown
	if cooldown <= 0 {
		cooldown = 5 * time.Minute
	}
	if time.Since(l.released) < cooldown {
		return
	}
	// After re-creation the filesystem must still be out of danger for twice the horizon.
	after := headroom - l.Ballast.Size
	st, err := l.Ballast.State()
	if err != nil || !l.Ballast.ShouldCreate(st, headroom) || l.danger(after, rate) ||
		(rate != nil && *rate > 0 && float64(after)/(*rate) < 2*l.horizon().Seconds()) {
		return
	}
	act := Action{Step: BallastRecreate, Items: []string{l.Ballast.Path}, Bytes: -l.Ballast.Size}
	switch {
	case l.Policy.DryRun:
		act.Result, act.Reason = journal.ResultDryRun, "dry run: would re-create the ballast"
	default:
		if err := l.Ballast.Create(); err != nil {
			act.Result, act.Reason = journal.ResultFailed, err.Error()
		} else {
			act.Result, act.Reason = journal.ResultApplied, "headroom recovered; ballast re-created"
		}
	}
	if act.Result == journal.ResultApplied {
		res.HeadroomAfter = headroom - l.Ballast.Size
	}
	res.Actions = append(res.Actions, act)
	l.report(ctx, act, l.signal(), res.HeadroomAfter)
}

func (l *Ladder) report(ctx context.Context, act Action, signal string, headroom int64) {
	r := journal.Report{Action: act.Step, Result: act.Result,
		Reason: fmt.Sprintf("%s: %d bytes; %s headroom now %d bytes", act.Reason, act.Bytes, signal, headroom),
		New:    map[string]string{"bytes": fmt.Sprint(act.Bytes), "items": fmt.Sprint(len(act.Items))}}
	if act.Reason == "" {
		r.Reason = fmt.Sprintf("reclaimed %d bytes (%d items); %s headroom now %d bytes", act.Bytes, len(act.Items), signal, headroom)
	}
	lvl := slog.LevelInfo
	if act.Result == journal.ResultFailed {
		lvl = slog.LevelError
	}
	l.log().Log(ctx, lvl, "reclaim", "action", act.Step, "result", act.Result, "bytes", act.Bytes,
		"items", act.Items, "headroom", headroom, "reason", act.Reason)
	if l.Reporter != nil {
		l.Reporter.Report(ctx, r)
	}
	if l.actions != nil {
		l.actions.WithLabelValues(act.Step, act.Result).Inc()
		if act.Result == journal.ResultApplied && act.Bytes > 0 {
			l.bytes.WithLabelValues(act.Step).Add(float64(act.Bytes))
		}
	}
}

func gcNames(items []GCItem) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Kind+" "+it.Name)
	}
	return out
}

func gcBytes(items []GCItem) int64 {
	var n int64
	for _, it := range items {
		n += it.Bytes
	}
	return n
}
