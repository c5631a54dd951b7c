package hostexec

import (
	"path/filepath"
	"strings"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// SystemBusSocket is the system bus' socket on a node.
const SystemBusSocket = "/run/dbus/system_bus_socket"

// View is how this process sees the node and its systemd manager: the host root and the
// D-Bus address it reaches the manager at ("" for the system bus at its usual place).
type View struct {
	Root hostfs.Root
	Bus  string
}

// BusAddress is the address to dial: Bus, or the node's system bus under the root (the
// DaemonSet mounts it at /host/run/dbus/system_bus_socket), or "" (this process's system bus).
func (v View) BusAddress() string {
	if v.Bus != "" || v.Root.IsHost() {
		return v.Bus
	}
	return "unix:path=" + v.Root.Path(SystemBusSocket)
}

// InContainer reports whether the root is the node's / mounted into this process (a
// DaemonSet's or a container's /host): the manager's socket is under it. A root elsewhere is
// a directory the manager sees at the same path (a fixture tree on the node).
//
// Why not compare mount namespaces: /proc/1/ns/mnt is often unreadable (no hostPID, fewer
// capabilities than PID 1, sandboxes), and files such as /.dockerenv also exist on machines
// built from container images.
func (v View) InContainer() bool {
	if v.Root.IsHost() {
		return false
	}
	p, ok := strings.CutPrefix(v.BusAddress(), "unix:path=")
	if !ok || strings.Contains(p, ",") {
		return false
	}
	root := filepath.Clean(string(v.Root))
	return strings.HasPrefix(filepath.Clean(p), root+"/")
}

// UnitRoot is the --host-root of a unit: "/" from a container, else the root itself.
func (v View) UnitRoot() hostfs.Root {
	if v.Root.IsHost() || v.InContainer() {
		return "/"
	}
	return hostfs.Root(filepath.Clean(string(v.Root)))
}

// HostPath is where the manager (and a unit) finds p, a path as this process sees it (under
// the root from a container).
func (v View) HostPath(p string) string {
	if p == "" || !v.InContainer() {
		return p
	}
	return v.Root.NodePath(p)
}

// UnitBusAddress is the manager's address as a unit on the node dials it.
func (v View) UnitBusAddress() string {
	addr := v.BusAddress()
	if p, ok := strings.CutPrefix(addr, "unix:path="); ok && v.InContainer() {
		return "unix:path=" + v.HostPath(p)
	}
	return addr
}
