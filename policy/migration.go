package policy

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/evictguard/evictguard/monitor"
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

// Defaults of a migration's durations, for the policy and `evictguard migrate`'s flags.
const (
	DefaultDrainTimeout     = 5 * time.Minute
	DefaultUnitTimeout      = 2 * time.Minute
	DefaultMigrationLockTTL = 30 * time.Minute
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
		m.DrainTimeout.Duration = DefaultDrainTimeout
	}
	if m.UnitTimeout.Duration == 0 {
		m.UnitTimeout.Duration = DefaultUnitTimeout
	}
	if m.LockTTL.Duration == 0 {
		m.LockTTL.Duration = DefaultMigrationLockTTL
	}
}

// Margin returns MinFree as migration.Options' margin (bytes, percent of the data); zero for the
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

func (m *MigrationPolicy) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	bad := func(path *field.Path, value any, format string, args ...any) {
		errs = append(errs, field.Invalid(path, value, fmt.Sprintf(format, args...)))
	}
	if !m.Enabled() {
		if m.Runtime != "" || m.Config != "" || len(m.Units) > 0 || m.Drain || m.KeepOld || m.Checksums || m.MinFree != "" || m.DrainTimeout.Duration != 0 ||
			m.UnitTimeout.Duration != 0 || m.LockTTL.Duration != 0 {
			bad(path.Child("to"), m.To, "must be set when other migration keys are (an empty to disables migration)")
		}
		return errs
	}
	switch {
	case !filepath.IsAbs(m.To):
		bad(path.Child("to"), m.To, "%q is not an absolute node path", m.To)
	case filepath.Clean(m.To) == "/":
		bad(path.Child("to"), m.To, "must not be /")
	case filepath.Clean(m.To) != m.To:
		bad(path.Child("to"), m.To, "%q is not a clean path (%s)", m.To, filepath.Clean(m.To))
	}
	switch m.Runtime {
	case MigrationRuntimeAuto, monitor.RuntimeDocker, monitor.RuntimeContainerd:
	default:
		bad(path.Child("runtime"), m.Runtime, "%q: must be auto, docker or containerd", m.Runtime)
	}
	if m.Config != "" && !filepath.IsAbs(m.Config) {
		bad(path.Child("config"), m.Config, "%q is not an absolute node path", m.Config)
	}
	for i, u := range m.Units {
		if !strings.HasSuffix(u, ".service") && !strings.HasSuffix(u, ".socket") {
			bad(path.Child("units").Index(i), u, "%q is not a .service or .socket unit", u)
		}
	}
	if _, _, err := m.Margin(); err != nil {
		bad(path.Child("minFree"), m.MinFree, "%v", err)
	}
	if m.DrainTimeout.Duration < 0 || m.UnitTimeout.Duration < 0 || m.LockTTL.Duration < 0 {
		bad(path, nil, "durations must not be negative")
	}
	return errs
}
