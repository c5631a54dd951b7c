package sdbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// TransientService describes a transient service: a command the manager runs as its own unit
// (in system.slice, outside the caller's cgroup and mount namespace), as systemd-run does.
type TransientService struct {
	Name        string   // unit name, ending in .service
	Description string   // Description=
	Argv        []string // ExecStart=; Argv[0] is an absolute path as the manager sees it
	Environment []string // Environment= ("KEY=value")
	// Output, if set, is a file (as the manager sees it) stdout and stderr are appended to
	// (StandardOutput=append:), so that whoever follows the unit can read what it printed.
	Output string
	// StopTimeout is TimeoutStopSec= (how long a stop waits for the process to exit before
	// SIGKILL); 0 keeps the manager's default.
	StopTimeout time.Duration
}

// ErrUnitExists is wrapped by StartTransient's error when a unit of that name is already
// loaded (running, or failed and not yet collected).
var ErrUnitExists = errors.New("unit already exists")

// StartTransient creates and starts svc as a transient unit (Type=exec, so the job is done
// once the command was executed) and waits up to timeout for the start job. The unit is
// garbage-collected when it ends, whatever its result (CollectMode=inactive-or-failed): the
// command's outcome is for it to record elsewhere. A unit of the same name that is still
// loaded makes the call fail with ErrUnitExists, which is what makes a unit name a lock.
func (c *Client) StartTransient(ctx context.Context, svc TransientService, timeout time.Duration) error {
	if !strings.HasSuffix(svc.Name, ".service") || len(svc.Argv) == 0 {
		return fmt.Errorf("start transient unit %q: a .service name and a command are required", svc.Name)
	}
	props := []sddbus.Property{
		sddbus.PropDescription(svc.Description),
		sddbus.PropType("exec"),
		sddbus.PropExecStart(svc.Argv, true),
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if len(svc.Environment) > 0 {
		props = append(props, sddbus.Property{Name: "Environment", Value: dbus.MakeVariant(svc.Environment)})
	}
	if svc.Output != "" {
		props = append(props,
			sddbus.Property{Name: "StandardOutputFileToAppend", Value: dbus.MakeVariant(svc.Output)},
			sddbus.Property{Name: "StandardErrorFileToAppend", Value: dbus.MakeVariant(svc.Output)})
	}
	if svc.StopTimeout > 0 {
		props = append(props, sddbus.Property{Name: "TimeoutStopUSec", Value: dbus.MakeVariant(uint64(svc.StopTimeout / time.Microsecond))})
	}
	err := c.job(ctx, "start", svc.Name, timeout, func(conn *sddbus.Conn, ctx context.Context, name, mode string, ch chan<- string) (int, error) {
		return conn.StartTransientUnitContext(ctx, name, "fail", props, ch)
	})
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.UnitExists" {
		return fmt.Errorf("start %s: %w", svc.Name, ErrUnitExists)
	}
	return err
}
