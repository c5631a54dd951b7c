// Package sdbus is a D-Bus client for the systemd manager built on go-systemd: it reads unit
// properties, reloads the manager, restarts units and waits for their jobs and health.
//
// It talks to the systemd manager (org.freedesktop.systemd1) over the system bus by default
// (New), or over a bus at a given address (NewWithAddress): the host's system bus seen from a
// DaemonSet ("unix:path=/host/run/dbus/system_bus_socket") or the sandboxed user manager used
// in tests. It never executes systemctl.
//
// Unit jobs (Start, Stop, Restart) are awaited until systemd reports their result. A job
// result of "done" only means the manager finished the job: for a Type=simple service such as
// the kubelet it says nothing about whether the process stays up, which is what WaitHealthy is
// for.
package sdbus
