package sdbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// ExecCommand is one ExecStart= entry as the manager parsed it (after drop-ins, with
// "ExecStart=" resets applied). Argv[0] is the process name, usually equal to Path. Variables
// such as $KUBELET_EXTRA_ARGS are not expanded: they are expanded at exec time from
// Environment and EnvironmentFiles.
type ExecCommand struct {
	Path         string
	Argv         []string
	IgnoreErrors bool // the "-" prefix
}

// EnvironmentFile is one EnvironmentFile= entry.
type EnvironmentFile struct {
	Path         string
	IgnoreErrors bool // the "-" prefix: a missing file is not an error
}

// UnitInfo is a snapshot of the properties of a unit that remediation needs. The Service
// fields are zero for units that are not services.
type UnitInfo struct {
	Name        string
	LoadState   string // "loaded", "not-found", "masked", "error", "bad-setting"
	ActiveState string // "active", "activating", "deactivating", "inactive", "failed", "reloading"
	SubState    string // for services: "running", "auto-restart", "exited", "dead", "failed", …

	FragmentPath string   // the unit file
	DropInPaths  []string // drop-ins in the order the manager applied them
	// NeedDaemonReload is true when the unit file or its drop-ins changed on disk since the
	// manager loaded them: a daemon-reload is needed for the changes to apply.
	NeedDaemonReload bool

	// InactiveExitTimestamp is when the unit last left the inactive state (its start time);
	// zero if it never did. ActiveEnterTimestamp is when it last became active.
	InactiveExitTimestamp time.Time
	ActiveEnterTimestamp  time.Time

	// Service properties.
	ExecStart        []ExecCommand
	Environment      []string // "KEY=value", after drop-ins
	EnvironmentFiles []EnvironmentFile
	Restart          string // Restart= ("no", "always", "on-failure", …)
	NRestarts        uint32 // automatic restarts (Restart=) so far
	MainPID          int
	Result           string // "success", "exit-code", "signal", "start-limit-hit", …
	ExecMainCode     int32  // CLD_EXITED (1), CLD_KILLED (2), … of the last main process
	ExecMainStatus   int32  // its exit status or signal
}

// String summarises the state for logs and error messages.
func (u *UnitInfo) String() string {
	if u == nil {
		return "<no state>"
	}
	s := fmt.Sprintf("LoadState=%s ActiveState=%s SubState=%s", u.LoadState, u.ActiveState, u.SubState)
	if strings.HasSuffix(u.Name, ".service") {
		s += fmt.Sprintf(" MainPID=%d NRestarts=%d Result=%s ExecMainStatus=%d", u.MainPID, u.NRestarts, u.Result, u.ExecMainStatus)
	}
	return s
}

// ErrUnitNotFound is wrapped by Unit's error when the manager has no such unit.
var ErrUnitNotFound = errors.New("unit not found")

// Unit reads the properties of unit. A unit the manager cannot find is ErrUnitNotFound; a unit
// that is masked or has errors is returned with that LoadState.
func (c *Client) Unit(ctx context.Context, name string) (*UnitInfo, error) {
	conn, err := c.connection(ctx)
	if err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	u := &UnitInfo{Name: name}
	if err := parseUnitProps(props, u); err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	if u.LoadState == "not-found" {
		return nil, fmt.Errorf("read unit %s: %w", name, ErrUnitNotFound)
	}
	if !strings.HasSuffix(name, ".service") {
		return u, nil
	}
	sprops, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service")
	if err != nil {
		return nil, fmt.Errorf("read service properties of %s: %w", name, err)
	}
	if err := parseServiceProps(sprops, u); err != nil {
		return nil, fmt.Errorf("read unit %s: %w", name, err)
	}
	return u, nil
}

func parseUnitProps(p map[string]any, u *UnitInfo) error {
	var inactiveExit, activeEnter uint64
	err := errors.Join(
		prop(p, "LoadState", &u.LoadState),
		prop(p, "ActiveState", &u.ActiveState),
		prop(p, "SubState", &u.SubState),
		prop(p, "FragmentPath", &u.FragmentPath),
		prop(p, "DropInPaths", &u.DropInPaths),
		prop(p, "NeedDaemonReload", &u.NeedDaemonReload),
		prop(p, "InactiveExitTimestamp", &inactiveExit),
		prop(p, "ActiveEnterTimestamp", &activeEnter),
	)
	u.InactiveExitTimestamp = usecTime(inactiveExit)
	u.ActiveEnterTimestamp = usecTime(activeEnter)
	return err
}

// execStartProp mirrors the D-Bus type a(sasbttttuii) of ExecStart.
type execStartProp struct {
	Path           string
	Argv           []string
	IgnoreErrors   bool
	StartRealtime  uint64
	StartMonotonic uint64
	ExitRealtime   uint64
	ExitMonotonic  uint64
	PID            uint32
	Code           int32
	Status         int32
}

// envFileProp mirrors a(sb) of EnvironmentFiles.
type envFileProp struct {
	Path         string
	IgnoreErrors bool
}

func parseServiceProps(p map[string]any, u *UnitInfo) error {
	var (
		execs    []execStartProp
		envFiles []envFileProp
		mainPID  uint32
	)
	err := errors.Join(
		prop(p, "ExecStart", &execs),
		prop(p, "Environment", &u.Environment),
		prop(p, "EnvironmentFiles", &envFiles),
		prop(p, "Restart", &u.Restart),
		prop(p, "NRestarts", &u.NRestarts),
		prop(p, "MainPID", &mainPID),
		prop(p, "Result", &u.Result),
		prop(p, "ExecMainCode", &u.ExecMainCode),
		prop(p, "ExecMainStatus", &u.ExecMainStatus),
	)
	u.MainPID = int(mainPID)
	u.ExecStart = make([]ExecCommand, 0, len(execs))
	for _, e := range execs {
		u.ExecStart = append(u.ExecStart, ExecCommand{Path: e.Path, Argv: e.Argv, IgnoreErrors: e.IgnoreErrors})
	}
	u.EnvironmentFiles = make([]EnvironmentFile, 0, len(envFiles))
	for _, f := range envFiles {
		u.EnvironmentFiles = append(u.EnvironmentFiles, EnvironmentFile(f))
	}
	return err
}

// prop stores property name of p (a value as go-systemd decoded it) into dst, converting
// D-Bus structs decoded as []any into Go structs.
func prop(p map[string]any, name string, dst any) error {
	v, ok := p[name]
	if !ok {
		return fmt.Errorf("property %s missing", name)
	}
	if err := dbus.Store([]any{v}, dst); err != nil {
		return fmt.Errorf("property %s: %w", name, err)
	}
	return nil
}

func usecTime(usec uint64) time.Time {
	if usec == 0 || usec == ^uint64(0) {
		return time.Time{}
	}
	return time.UnixMicro(int64(usec))
}
