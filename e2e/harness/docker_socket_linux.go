package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SocketDocker is dockerd as a node with a packaged Docker runs it: docker.socket listens on
// Socket and starts docker.service (dockerd -H fd://) at the first connection. The service
// records every start in StartsLog, so a test can tell when dockerd was (re)started.
type SocketDocker struct {
	*Docker
	SocketUnit, ServiceUnit string
	StartsLog               string
}

// StartDockerSocketUnits writes docker.socket and a docker.service that Requires it, starts
// only the socket over D-Bus, and waits for /_ping — the first connection activates the
// service. opts are as for StartDockerUnit (Unit names the service; the socket unit has its
// stem).
func StartDockerSocketUnits(t testing.TB, sd *Systemd, opts DockerUnitOptions) *SocketDocker {
	t.Helper()
	bin := Binary(t, "dockerd", "docker.io")
	Binary(t, "docker", "docker.io")
	sh := Binary(t, "sh", "dash")
	dir := TempDir(t, "docker-socket-unit")
	d := &SocketDocker{Docker: &Docker{Dir: dir, DataRoot: opts.DataRoot, ExecRoot: filepath.Join(dir, "exec"),
		Socket: filepath.Join(dir, "docker.sock"), ConfigPath: filepath.Join(dir, "daemon.json")},
		ServiceUnit: opts.Unit, StartsLog: filepath.Join(dir, "starts.log")}
	if d.ServiceUnit == "" {
		d.ServiceUnit = "docker.service"
	}
	d.SocketUnit = strings.TrimSuffix(d.ServiceUnit, ".service") + ".socket"
	cfg := opts.DaemonJSON
	if cfg == "" {
		cfg = "{}"
	}
	if err := os.WriteFile(d.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := fmt.Sprintf("--config-file %s --exec-root %s -H fd:// --pidfile %s --bridge=none --iptables=false --ip6tables=false --storage-driver=vfs",
		d.ConfigPath, d.ExecRoot, filepath.Join(dir, "docker.pid"))
	if opts.DataRoot != "" {
		args += " --data-root " + opts.DataRoot
	}
	sd.WriteUnit(t, d.SocketUnit, fmt.Sprintf(`[Unit]
Description=Docker API socket (evictguard e2e)

[Socket]
ListenStream=%s
SocketMode=0660
`, d.Socket))
	// %% is a literal % in a unit file.
	sd.WriteUnit(t, d.ServiceUnit, fmt.Sprintf(`[Unit]
Description=Docker, socket-activated (evictguard e2e)
Requires=%[1]s
After=%[1]s

[Service]
ExecStartPre=%[2]s -c 'date +%%%%s.%%%%N >> %[3]s'
ExecStart=%[4]s %[5]s
StandardOutput=append:%[6]s
StandardError=inherit
TimeoutStopSec=20
KillMode=mixed
`, d.SocketUnit, sh, d.StartsLog, bin, args, filepath.Join(dir, "dockerd.log")))
	d.HTTP = dockerHTTP(d.Socket)
	conn := sd.Conn(t)
	StartUnit(t, sd, d.SocketUnit)
	t.Cleanup(func() { StopUnit(sd, conn, d.ServiceUnit) })
	if err := d.waitPing(nil); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
		t.Fatalf("socket-activated %s did not become ready: %v\n%s", d.ServiceUnit, err, unitLogTail(string(log), 3000))
	}
	return d
}

// Starts returns when the service was started, from StartsLog.
func (d *SocketDocker) Starts(t testing.TB) []time.Time {
	t.Helper()
	b, err := os.ReadFile(d.StartsLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []time.Time
	for l := range strings.FieldsSeq(string(b)) {
		f, err := strconv.ParseFloat(l, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", d.StartsLog, l, err)
		}
		out = append(out, time.Unix(0, int64(f*1e9)))
	}
	return out
}
