package remediate

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/treecopy"
)

// MigrationPolicy lets the daemon's planner move the container runtime's data root off nodefs
// (the action of `evictguard migrate`). It is disabled unless To is set.
type MigrationPolicy struct {
	// To is the new data root (node path) on another filesystem; "" disables the action.
	To string `json:"to,omitempty" yaml:"to,omitempty"`
	// Runtime is auto (the runtime discovery found, default), docker or containerd.
	Runtime string `json:"runtime,omitempty" yaml:"runtime,omitempty"`
	// Config is the runtime's config file (node path; default /etc/docker/daemon.json or
	// /etc/containerd/config.toml).
	Config string `json:"config,omitempty" yaml:"config,omitempty"`
	// Units are the runtime's units stopped and started again (default docker.socket +
	// docker.service, or containerd.service; every X.service brings its X.socket).
	Units []string `json:"units,omitempty" yaml:"units,omitempty"`
	// Drain cordons and drains the node first (needs the API server).
	Drain bool `json:"drain,omitempty" yaml:"drain,omitempty"`
	// KeepOld keeps the old root as <old>.evictguard-backup-<op> instead of removing it.
	KeepOld bool `json:"keepOld,omitempty" yaml:"keepOld,omitempty"`
	// Checksums also compares contents when verifying (longer downtime).
	Checksums bool `json:"checksums,omitempty" yaml:"checksums,omitempty"`
	// MinFree must stay free on the target beyond the data: a quantity ("2Gi") or a
	// percentage of the data ("10%"); default 10 % and at least 16 MiB.
	MinFree string `json:"minFree,omitempty" yaml:"minFree,omitempty"`
	// DrainTimeout bounds the drain (default 5m).
	DrainTimeout Duration `json:"drainTimeout,omitzero" yaml:"drainTimeout,omitempty"`
	// UnitTimeout bounds each unit stop or start (default 2m).
	UnitTimeout Duration `json:"unitTimeout,omitzero" yaml:"unitTimeout,omitempty"`
	// LockTTL is the duration of the cluster Lease (policy.lock) held through a migration,
	// which lasts as long as the copy (default 30m).
	LockTTL Duration `json:"lockTTL,omitzero" yaml:"lockTTL,omitempty"`
}

// Runtimes a migration policy may name.
const (
	MigrationRuntimeAuto = "auto"
)

// Enabled reports whether the policy allows migrating the data root.
func (m *MigrationPolicy) Enabled() bool { return m.To != "" }

func (m *MigrationPolicy) applyDefaults() {
	if !m.Enabled() {
		return
	}
	if m.Runtime == "" {
		m.Runtime = MigrationRuntimeAuto
	}
	if m.DrainTimeout.Duration == 0 {
		m.DrainTimeout.Duration = 5 * time.Minute
	}
	if m.UnitTimeout.Duration == 0 {
		m.UnitTimeout.Duration = 2 * time.Minute
	}
	if m.LockTTL.Duration == 0 {
		m.LockTTL.Duration = 30 * time.Minute
	}
}

// Margin returns MinFree as MigrateOptions' margin (bytes, percent of the data); zero for the
// default.
func (m *MigrationPolicy) Margin() (bytes int64, percent float64, err error) {
	if m.MinFree == "" {
		return 0, 0, nil
	}
	if p, ok := strings.CutSuffix(m.MinFree, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 || v >= 1000 {
			return 0, 0, fmt.Errorf("%q is not a percentage in [0, 1000)", m.MinFree)
		}
		return 1, v, nil // explicit: no 16 MiB floor
	}
	q, err := resource.ParseQuantity(m.MinFree)
	if err != nil || q.Sign() < 0 {
		return 0, 0, fmt.Errorf("%q is neither a non-negative quantity (2Gi) nor a percentage (10%%)", m.MinFree)
	}
	return max(q.Value(), 1), 0, nil
}

func (m *MigrationPolicy) validate(bad func(field, format string, args ...any)) {
	if !m.Enabled() {
		if m.Runtime != "" || m.Config != "" || len(m.Units) > 0 || m.Drain || m.KeepOld || m.Checksums || m.MinFree != "" || m.DrainTimeout.Duration != 0 ||
			m.UnitTimeout.Duration != 0 || m.LockTTL.Duration != 0 {
			bad("migration.to", "must be set when other migration keys are (an empty to disables migration)")
		}
		return
	}
	switch {
	case !filepath.IsAbs(m.To):
		bad("migration.to", "%q is not an absolute node path", m.To)
	case filepath.Clean(m.To) == "/":
		bad("migration.to", "must not be /")
	case filepath.Clean(m.To) != m.To:
		bad("migration.to", "%q is not a clean path (%s)", m.To, filepath.Clean(m.To))
	}
	switch m.Runtime {
	case MigrationRuntimeAuto, RuntimeDocker, RuntimeContainerd:
	default:
		bad("migration.runtime", "%q: must be auto, docker or containerd", m.Runtime)
	}
	if m.Config != "" && !filepath.IsAbs(m.Config) {
		bad("migration.config", "%q is not an absolute node path", m.Config)
	}
	for i, u := range m.Units {
		if !strings.HasSuffix(u, ".service") && !strings.HasSuffix(u, ".socket") {
			bad(fmt.Sprintf("migration.units[%d]", i), "%q is not a .service or .socket unit", u)
		}
	}
	if _, _, err := m.Margin(); err != nil {
		bad("migration.minFree", "%v", err)
	}
	if m.DrainTimeout.Duration < 0 || m.UnitTimeout.Duration < 0 || m.LockTTL.Duration < 0 {
		bad("migration", "durations must not be negative")
	}
}

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
	// Preflight is `evictguard migrate`'s preflight (PlanMigration), when it ran.
	Preflight *MigrationPlan
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
// runtime is docker or containerd (MigrationCandidate), and a disk signal is in warning or
// breached. When all hold, NeedsPreflight is true: run PlanMigration with Runtime and pass its
// plan to AddPreflight.
func PlanMigrationAction(p *Policy, layout *monitor.Layout, signals []monitor.SignalStatus) *MigrationDecision {
	d := &MigrationDecision{Enabled: p.Migration.Enabled()}
	if !d.Enabled {
		d.Reasons = append(d.Reasons, "the policy does not allow migration (no migration.to)")
		return d
	}
	ok, why := MigrationCandidate(layout)
	if !ok {
		d.Refusals = append(d.Refusals, "not migrating the data root: "+why)
		return d
	}
	d.Runtime = layout.Runtime
	if r := p.Migration.Runtime; r != "" && r != MigrationRuntimeAuto && r != layout.Runtime {
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

// AddPreflight records the preflight (PlanMigration for Runtime and the policy's target): its
// refusals become the decision's.
func (d *MigrationDecision) AddPreflight(mp *MigrationPlan) {
	d.Preflight = mp
	// The preflight judges "on nodefs" by the default kubelet root dir; the planner knows the
	// monitor's layout, where imagefs (this root) shares nodefs.
	mp.SharesNodeFs = true
	for _, r := range mp.Refusals {
		d.Refusals = append(d.Refusals, "migration preflight: "+r)
	}
	if len(d.Refusals) == 0 {
		d.Reasons = append(d.Reasons, fmt.Sprintf("preflight passed: %s to move, %s available on %s, expected downtime ~%s",
			treecopy.HumanBytes(mp.Used.Bytes), treecopy.HumanBytes(mp.ToAvail), mp.To, mp.EstimatedDowntime.Round(time.Second)))
	}
}

func isDiskSignal(s string) bool {
	return strings.HasPrefix(s, "nodefs.") || strings.HasPrefix(s, "imagefs.") || strings.HasPrefix(s, "containerfs.")
}
