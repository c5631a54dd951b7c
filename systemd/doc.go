// Package systemd is a D-Bus client for the systemd manager built on go-systemd: it reads unit
// properties, reloads the manager, restarts units and waits for their jobs and health.
//
// It talks to the system bus by default, or to a given bus address (the sandboxed manager used
// in tests). It never executes systemctl.
package systemd
