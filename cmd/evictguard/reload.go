package main

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/reclaim"
)

// A reload runs in the monitoring loop's goroutine, but the reclaim ladder, the budget
// publisher and the remediation pass belong to goroutines of their own. A reload therefore
// never touches them: it hands the new settings over (logsLive, policyLive) and their owner
// takes them between two steps. Nothing is rebuilt, so the ballast, the ladder's cooldowns
// and the published budgets survive.

// logsUpdate is a reloaded log-budget and reclaim-ladder configuration.
type logsUpdate struct {
	budgetFile    string // node path; "" writes no files
	marginPercent float64
	marginBytes   int64
	allow         []string
	dryRun        bool
	horizon       time.Duration
	lowHeadroom   int64
	keepExited    int
	keepImages    []string
	rotatedAge    time.Duration
	posFiles      []string // node paths
}

// newLogsUpdate parses f (as start does) into an update.
func newLogsUpdate(f *logReclaimFlags) (*logsUpdate, error) {
	u := &logsUpdate{budgetFile: f.cfg.Logs.Budget.File, dryRun: f.cfg.Actions.Reclaim.DryRun, horizon: f.cfg.Actions.Reclaim.Horizon.Duration, keepExited: f.cfg.Actions.Reclaim.GC.KeepExited,
		keepImages: f.cfg.Actions.Reclaim.GC.KeepImages, rotatedAge: f.cfg.Actions.Reclaim.RotatedLogs.MinAge.Duration, posFiles: f.cfg.Actions.Reclaim.RotatedLogs.PosFiles}
	var err error
	if u.marginPercent, u.marginBytes, err = config.ParseMargin(f.cfg.Logs.Budget.Margin); err != nil {
		return nil, fmt.Errorf("log budget margin: %w", err)
	}
	for _, name := range f.cfg.Actions.Reclaim.Allow {
		step, ok := config.ReclaimSteps[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("reclaim: unknown step %q (want ballast, gc, logs, escalate)", name)
		}
		u.allow = append(u.allow, step)
	}
	if u.lowHeadroom, err = config.ParseQuantity(f.cfg.Actions.Reclaim.LowHeadroom); err != nil {
		return nil, fmt.Errorf("reclaim low headroom: %w", err)
	}
	return u, nil
}

// logsLive hands reloaded settings to the logs worker (logReclaimFlags.start), which calls
// apply before each snapshot; the latest update wins.
type logsLive struct {
	pending atomic.Pointer[logsUpdate]
	applied atomic.Int64 // updates applied, for tests and the log
}

func (l *logsLive) set(u *logsUpdate) {
	if l != nil {
		l.pending.Store(u)
	}
}

// apply puts a pending update into effect on the worker's own objects: the budget margin,
// the publisher's file, and the ladder's policy, GC keep rules and rotated-log rules
// (ladder may be nil: no ladder was built). The ballast is not touched. Only the worker
// goroutine may call it.
func (l *logsLive) apply(root hostfs.Root, budget *reclaim.BudgetConfig, pub *reclaim.BudgetPublisher, ladder *reclaim.Ladder, log *slog.Logger) {
	if l == nil {
		return
	}
	u := l.pending.Swap(nil)
	if u == nil {
		return
	}
	budget.MarginPercent, budget.MarginBytes = u.marginPercent, u.marginBytes
	if pub != nil {
		file := ""
		if u.budgetFile != "" {
			file = root.Path(u.budgetFile)
		}
		pub.SetFile(file)
	}
	attrs := []any{"budgetMarginPercent", u.marginPercent, "budgetMarginBytes", u.marginBytes, "budgetFile", u.budgetFile}
	if ladder != nil {
		p := ladder.Policy
		p.Allow, p.DryRun, p.Horizon, p.LowHeadroom = u.allow, u.dryRun, u.horizon, u.lowHeadroom
		ladder.Policy = p
		switch gc := ladder.GC.(type) {
		case *reclaim.DockerGC:
			gc.KeepExited, gc.KeepImages = u.keepExited, u.keepImages
		case *reclaim.CRIGC:
			gc.KeepPerContainer, gc.KeepImages = u.keepExited, u.keepImages
		}
		if ladder.Logs != nil {
			ladder.Logs.MinAge = u.rotatedAge
			ladder.Logs.PosFiles = nil
			for _, p := range u.posFiles {
				ladder.Logs.PosFiles = append(ladder.Logs.PosFiles, root.Path(p))
			}
		}
		attrs = append(attrs, "allow", p.Allow, "dryRun", p.DryRun, "horizon", p.Horizon, "lowHeadroom", p.LowHeadroom,
			"keepExited", u.keepExited, "keepImages", u.keepImages, "rotatedLogAge", u.rotatedAge)
	}
	n := l.applied.Add(1)
	if log != nil {
		log.Info("log budget and reclaim ladder reconfigured", append(attrs, "reload", n)...)
	}
}

// policyLive hands a reloaded remediation policy to the remediation loop, which reads it
// at the start of each pass (daemonRemediation.start).
type policyLive struct {
	p atomic.Pointer[policy.Policy]
}

func (l *policyLive) set(p *policy.Policy) {
	if l != nil {
		l.p.Store(p)
	}
}

// get returns the latest reloaded policy, or def when there has been none.
func (l *policyLive) get(def *policy.Policy) *policy.Policy {
	if l == nil {
		return def
	}
	if p := l.p.Load(); p != nil {
		return p
	}
	return def
}
