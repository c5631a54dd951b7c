package remediate

import (
	"fmt"
	"strings"
	"time"

	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
)

// MigrationDecision is the planner's answer about a data-root migration: whether to offer it,
// and the reasons either way (refusals read like a threshold plan's).
type MigrationDecision struct {
	// Enabled: the policy allows migration (migration.to is set).
	Enabled bool
	// Runtime to migrate (docker or containerd), resolved from the policy and the layout.
	Runtime string
	// Trigger names the disk signals in warning or breached.
	Trigger []string
	// Reasons explain the decision; Refusals are why it must not be carried out now.
	Reasons  []string
	Refusals []string
	// Preflight is `evictguard migrate`'s preflight (migration.NewPlan), when it ran.
	Preflight *migration.Plan
}

// Act reports whether the migration is offered: allowed, needed, and the preflight passed.
func (d *MigrationDecision) Act() bool {
	return d != nil && d.Enabled && d.Preflight != nil && len(d.Refusals) == 0
}

// NeedsPreflight reports whether the decision so far wants the preflight to run.
func (d *MigrationDecision) NeedsPreflight() bool {
	return d != nil && d.Enabled && d.Preflight == nil && len(d.Refusals) == 0
}

// PlanMigrationAction decides, before the preflight, whether the daemon's planner offers
// migrate-data-root: the policy allows it (migration.to), imagefs shares nodefs and the
// runtime is docker or containerd (migration.Candidate), and a disk signal is in warning or
// breached. When all hold, NeedsPreflight is true: run migration.NewPlan with Runtime and pass its
// plan to AddPreflight.
func PlanMigrationAction(p *policy.Policy, layout *monitor.Layout, signals []monitor.SignalStatus) *MigrationDecision {
	d := &MigrationDecision{Enabled: p.Migration.Enabled()}
	if !d.Enabled {
		d.Reasons = append(d.Reasons, "the policy does not allow migration (no migration.to)")
		return d
	}
	ok, why := migration.Candidate(layout)
	if !ok {
		d.Refusals = append(d.Refusals, "not migrating the data root: "+why)
		return d
	}
	d.Runtime = layout.Runtime
	if r := p.Migration.Runtime; r != "" && r != policy.MigrationRuntimeAuto && r != layout.Runtime {
		d.Refusals = append(d.Refusals, fmt.Sprintf("not migrating the data root: the policy names runtime %s but the node runs %s", r, layout.Runtime))
		return d
	}
	for _, s := range signals {
		if !isDiskSignal(s.Signal) || s.Capacity <= 0 {
			continue
		}
		if s.State == monitor.StateWarning || s.State == monitor.StateBreached {
			d.Trigger = append(d.Trigger, fmt.Sprintf("%s (%s %s)", s.Signal, s.Kind, s.State))
		}
	}
	if len(d.Trigger) == 0 {
		d.Reasons = append(d.Reasons, "no disk signal is in warning or breached: no migration needed")
		d.Enabled = false
		return d
	}
	d.Reasons = append(d.Reasons, fmt.Sprintf("%s; %s in warning or breached: moving the %s data root to %s gives nodefs real headroom",
		why, strings.Join(d.Trigger, ", "), d.Runtime, p.Migration.To))
	return d
}

// AddPreflight records the preflight (migration.NewPlan for Runtime and the policy's target): its
// refusals become the decision's.
func (d *MigrationDecision) AddPreflight(mp *migration.Plan) {
	d.Preflight = mp
	// The preflight judges "on nodefs" by the default kubelet root dir; the planner knows the
	// monitor's layout, where imagefs (this root) shares nodefs.
	mp.SharesNodeFs = true
	for _, r := range mp.Refusals {
		d.Refusals = append(d.Refusals, "migration preflight: "+r)
	}
	if len(d.Refusals) == 0 {
		d.Reasons = append(d.Reasons, fmt.Sprintf("preflight passed: %s to move, %s available on %s, expected downtime ~%s",
			units.Bytes(mp.Used.Bytes), units.Bytes(mp.ToAvail), mp.To, mp.EstimatedDowntime.Round(time.Second)))
	}
}

func isDiskSignal(s string) bool {
	return strings.HasPrefix(s, "nodefs.") || strings.HasPrefix(s, "imagefs.") || strings.HasPrefix(s, "containerfs.")
}
