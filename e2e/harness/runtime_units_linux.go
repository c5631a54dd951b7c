package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Runtimes as units of the sandboxed systemd, so that evictguard can stop and start them over
// D-Bus as it would docker.service or containerd.service on a node. Their processes run in
// the manager's private mount namespace: filesystems the test mounts (TmpFS) must be mounted
// before StartSystemd to be visible to them.

// DockerUnitOptions tunes StartDockerUnit.
type DockerUnitOptions struct {
	// DaemonJSON is written as the daemon's --config-file; it should set data-root (or the
	// legacy graph). Without either, --data-root DataRoot is passed.
	DaemonJSON string
	DataRoot   string
	// Unit is the unit name (default docker.service).
	Unit string
	// StorageDriver is dockerd's --storage-driver (default vfs; overlay2 needs a real disk,
	// ext4 or xfs with ftype=1, under the data root).
	StorageDriver string
	// KillMode is the unit's (default mixed; Debian's docker.service has process, which
	// leaves containerd-shims and so live-restored containers running).
	KillMode string
}

// StartDockerUnit writes docker.service running dockerd with the harness's arguments (vfs, no
// networking), starts it over D-Bus and waits for /_ping. Proc is nil: systemd owns the
// process.
func StartDockerUnit(t testing.TB, sd *Systemd, opts DockerUnitOptions) *Docker {
	t.Helper()
	bin := Binary(t, "dockerd", "docker.io")
	Binary(t, "docker", "docker.io")
	dir := TempDir(t, "docker-unit")
	d := &Docker{Dir: dir, DataRoot: opts.DataRoot, ExecRoot: filepath.Join(dir, "exec"),
		Socket: filepath.Join(dir, "docker.sock"), ConfigPath: filepath.Join(dir, "daemon.json")}
	cfg := opts.DaemonJSON
	if cfg == "" {
		cfg = "{}"
	}
	if err := os.WriteFile(d.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	driver := opts.StorageDriver
	if driver == "" {
		driver = "vfs"
	}
	args := fmt.Sprintf("--config-file %s --exec-root %s -H unix://%s --pidfile %s --bridge=none --iptables=false --ip6tables=false --storage-driver=%s",
		d.ConfigPath, d.ExecRoot, d.Socket, filepath.Join(dir, "docker.pid"), driver)
	if opts.DataRoot != "" {
		args += " --data-root " + opts.DataRoot
	}
	unit := opts.Unit
	if unit == "" {
		unit = "docker.service"
	}
	killMode := opts.KillMode
	if killMode == "" {
		killMode = "mixed"
	}
	sd.WriteUnit(t, unit, fmt.Sprintf(`[Unit]
Description=Docker (evictguard e2e)

[Service]
ExecStart=%s %s
StandardOutput=append:%s
StandardError=inherit
TimeoutStopSec=20
KillMode=%s
`, bin, args, filepath.Join(dir, "dockerd.log"), killMode))
	d.HTTP = dockerHTTP(d.Socket)
	StartUnit(t, sd, unit)
	if err := d.waitPing(nil); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
		t.Fatalf("docker.service did not become ready: %v\n%s", err, unitLogTail(string(log), 3000))
	}
	return d
}

// StartContainerdUnit writes containerd.service with ContainerdConfig (CRI, native
// snapshotter unless opts say otherwise), starts it over D-Bus and waits until it answers.
func StartContainerdUnit(t testing.TB, sd *Systemd, opts ContainerdOptions) *Containerd {
	t.Helper()
	bin := Binary(t, "containerd", "containerd")
	Binary(t, "runc", "runc")
	c := prepareContainerd(t, TempDir(t, "containerd-unit"), opts, "# containerd for the evictguard e2e suite\n")
	dir := c.Dir
	sd.WriteUnit(t, "containerd.service", fmt.Sprintf(`[Unit]
Description=containerd (evictguard e2e)

[Service]
ExecStart=%s --config %s
StandardOutput=append:%s
StandardError=inherit
TimeoutStopSec=20
KillMode=process
`, bin, c.ConfigPath, filepath.Join(dir, "containerd.log")))
	StartUnit(t, sd, "containerd.service")
	err := WaitFor(context.Background(), 30*time.Second, nil, func() error { return ctrRun(c.Address, "version") })
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
		t.Fatalf("containerd.service did not become ready: %v\n%s", err, unitLogTail(string(log), 3000))
	}
	c.removePodsAtCleanup(t)
	return c
}

// StartUnit reloads the manager and starts unit, failing the test unless the job is done.
// The unit is stopped at cleanup.
func StartUnit(t testing.TB, sd *Systemd, unit string) {
	t.Helper()
	conn := sd.Conn(t)
	ctx := context.Background()
	if err := conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, unit, "replace", done); err != nil {
		t.Fatalf("start %s: %v", unit, err)
	}
	if r := <-done; r != "done" {
		t.Fatalf("start %s: job %s", unit, r)
	}
	t.Cleanup(func() { StopUnit(sd, conn, unit) })
}

// StopUnit stops unit and waits up to 30s for the job.
func StopUnit(_ *Systemd, conn *sddbus.Conn, unit string) {
	ch := make(chan string, 1)
	if _, err := conn.StopUnitContext(context.Background(), unit, "replace", ch); err == nil {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
		}
	}
}

func unitLogTail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
