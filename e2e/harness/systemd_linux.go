package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Systemd is a real systemd manager (`systemd --user`) on a real D-Bus session bus, sandboxed
// so that it does not have to be PID 1 and cannot disturb the host:
//
//   - it runs in a private mount namespace (`unshare -m --propagation private`) where
//     /run/systemd is a fresh tmpfs holding /run/systemd/system, which makes the manager
//     believe the machine was booted with systemd;
//   - the session bus at RuntimeDir/bus is the manager's own socket-activated dbus.service
//     (a user manager only uses a bus whose dbus.socket and dbus.service units it runs);
//   - before exec'ing systemd the wrapper moves itself into a cgroup of its own,
//     <own cgroup>/evictguard-e2e/<name>, in every hierarchy the manager uses. This matters:
//     a manager whose cgroup is the root cgroup treats the whole tree as its own and moves
//     every process on the host into its init.scope. Inside its own cgroup it only ever
//     touches that subtree, and the subtree is what teardown kills and removes.
//
// Units are loaded from UnitDir ($XDG_CONFIG_HOME/systemd/user) and run as root (the manager
// runs as root); their default working directory is HOME, which is Dir/home, so Sweep finds
// them by cwd even if the test binary died before teardown. Units run inside the manager's
// mount namespace.
type Systemd struct {
	Dir        string // sandbox root (under BaseDir), also holds the logs
	RuntimeDir string // $XDG_RUNTIME_DIR of the manager
	ConfigHome string // $XDG_CONFIG_HOME of the manager
	UnitDir    string // $XDG_CONFIG_HOME/systemd/user
	Home       string // $HOME of the manager and default working directory of units
	BusAddress string // "unix:path=…/bus"
	Cgroup     string // cgroup path (relative to each hierarchy's root) the manager owns
	Proc       *Process

	hierarchies []sdCgroupHierarchy
	opts        SystemdOptions
}

// SandboxTarget is the unit the sandboxed manager starts instead of default.target, so that
// none of the distribution's user units (sockets, agents) are started.
const SandboxTarget = "evictguard-sandbox.target"

// StartSystemd starts a sandboxed systemd manager and waits until it answers on D-Bus with
// SystemState "running" or "degraded". Everything is torn down in cleanup: the manager stops
// its units, then every process left in its cgroups is killed, the cgroups are removed and the
// namespace (with its tmpfs) goes away with its last process.
func StartSystemd(t testing.TB) *Systemd {
	t.Helper()
	return StartSystemdWith(t, SystemdOptions{})
}

// SystemdOptions tunes StartSystemdWith.
type SystemdOptions struct {
	// SharedRoot makes every mount of the sandbox's namespace shared (`mount --make-rshared
	// /` inside it), as systemd does as PID 1 on a node. Pods' HostToContainer (rslave)
	// mounts of the node's / need it; the namespace stays private to the host.
	SharedRoot bool
	// UnitDirAsSystem bind-mounts the manager's unit directory over /etc/systemd/system inside
	// the sandbox's namespace (the host's is untouched), so that whatever sees the node's /
	// from there (a pod's /host) finds kubelet.service and its drop-ins where a node has them,
	// and a drop-in written there is the manager's.
	UnitDirAsSystem bool
}

// StartSystemdWith is StartSystemd with options.
func StartSystemdWith(t testing.TB, opts SystemdOptions) *Systemd {
	t.Helper()
	RequireRoot(t)
	unshare := Binary(t, "unshare", "util-linux")
	Binary(t, "mount", "mount")
	dbusDaemon := Binary(t, "dbus-daemon", "dbus-daemon")
	manager := ""
	for _, p := range []string{"/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		if _, err := os.Stat(p); err == nil {
			manager = p
			break
		}
	}
	if manager == "" {
		Unavailable(t, "systemd manager binary not found (install Debian package systemd)")
	}

	dir := TempDir(t, "systemd")
	s := &Systemd{
		Dir:        dir,
		RuntimeDir: filepath.Join(dir, "run"),
		ConfigHome: filepath.Join(dir, "config"),
		Home:       filepath.Join(dir, "home"),
		opts:       opts,
	}
	s.UnitDir = filepath.Join(s.ConfigHome, "systemd", "user")
	s.BusAddress = "unix:path=" + filepath.Join(s.RuntimeDir, "bus")
	for _, d := range []string{s.RuntimeDir, s.UnitDir, s.Home, filepath.Join(dir, "data"), filepath.Join(dir, "state"), filepath.Join(dir, "cache")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("create %s: %v", d, err)
		}
	}
	if err := os.Chmod(s.RuntimeDir, 0o700); err != nil {
		t.Fatalf("chmod %s: %v", s.RuntimeDir, err)
	}

	// Manager configuration: short stop timeouts so teardown and restarts do not hang for the
	// default 90 s on a unit that ignores SIGTERM.
	sdWriteFile(t, filepath.Join(s.ConfigHome, "systemd", "user.conf"),
		"[Manager]\nDefaultTimeoutStopSec=5s\nDefaultTimeoutAbortSec=5s\n")
	// The bus is a socket-activated dbus.service of the manager itself, as in a real user
	// session and as on a node (where dbus.service is a unit of PID 1): a user manager only
	// connects to its API bus once its dbus.socket and dbus.service units are running, so a
	// dbus-daemon started beside it is never used. These replace the distribution's units.
	sdWriteFile(t, filepath.Join(s.UnitDir, "dbus.socket"), fmt.Sprintf(`[Unit]
Description=D-Bus session bus socket (evictguard sandbox)

[Socket]
ListenStream=%s
RemoveOnStop=yes
`, filepath.Join(s.RuntimeDir, "bus")))
	sdWriteFile(t, filepath.Join(s.UnitDir, "dbus.service"), fmt.Sprintf(`[Unit]
Description=D-Bus session bus (evictguard sandbox)
Requires=dbus.socket

[Service]
ExecStart=%s --session --address=systemd: --nofork --nopidfile --systemd-activation
StandardOutput=append:%s
StandardError=inherit
`, dbusDaemon, filepath.Join(dir, "dbus.log")))
	sdWriteFile(t, filepath.Join(s.UnitDir, SandboxTarget), `[Unit]
Description=evictguard e2e sandbox (replaces default.target)
Wants=dbus.socket dbus.service
After=dbus.socket dbus.service
`)

	hs, err := sdCgroupHierarchies()
	if err != nil {
		Unavailable(t, "cgroups: %v", err)
	}
	s.hierarchies = hs
	s.Cgroup = sdSandboxCgroupPath(hs, filepath.Base(dir))
	if err := SweepSystemdCgroups(); err != nil {
		t.Logf("sweeping stale sandbox cgroups: %v", err)
	}
	err = sdCreateCgroups(hs, s.Cgroup)
	// Registered before Start, so it runs after the manager and its units are gone.
	t.Cleanup(func() {
		if err := sdRemoveCgroups(hs, s.Cgroup); err != nil {
			t.Errorf("remove sandbox cgroups: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("create sandbox cgroups: %v", err)
	}

	script := filepath.Join(dir, "start-systemd.sh")
	sdWriteFile(t, script, s.wrapperScript(manager))
	env := []string{
		"HOME=" + s.Home,
		"XDG_RUNTIME_DIR=" + s.RuntimeDir,
		"XDG_CONFIG_HOME=" + s.ConfigHome,
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"XDG_STATE_HOME=" + filepath.Join(dir, "state"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"DBUS_SESSION_BUS_ADDRESS=" + s.BusAddress,
		"SYSTEMD_LOG_TARGET=console",
		"SYSTEMD_LOG_LEVEL=info",
		"SYSTEMD_LOG_COLOR=0",
	}
	// unshare execs sh, which execs systemd: Proc's PID is the manager's.
	s.Proc = Start(t, dir, "systemd", env, unshare, "-m", "--propagation", "private", "sh", script)
	t.Cleanup(func() { s.teardown(t) })

	ctx := context.Background()
	err = WaitFor(ctx, 30*time.Second, s.Proc, func() error {
		conn, err := DialSystemd(ctx, s.BusAddress)
		if err != nil {
			return err
		}
		defer conn.Close()
		p, err := conn.SystemStateContext(ctx)
		if err != nil {
			return err
		}
		state := strings.Trim(p.Value.String(), `"`)
		if state != "running" && state != "degraded" {
			return fmt.Errorf("manager SystemState is %q", state)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sandboxed systemd did not come up: %v\nlog tail:\n%s", err, s.Proc.LogTail(4000))
	}
	return s
}

func (s *Systemd) wrapperScript(manager string) string {
	var b strings.Builder
	b.WriteString("# Written by the evictguard e2e harness; run as: unshare -m --propagation private sh THIS\n")
	b.WriteString("set -eu\n")
	b.WriteString("# Join the sandbox cgroup in every hierarchy systemd uses, before systemd starts.\n")
	for _, h := range s.hierarchies {
		fmt.Fprintf(&b, "echo $$ > %s\n", sdShQuote(filepath.Join(h.mount, s.Cgroup, "cgroup.procs")))
	}
	if s.opts.SharedRoot {
		b.WriteString("mount --make-rshared /\n")
	}
	if s.opts.UnitDirAsSystem {
		b.WriteString("mkdir -p /etc/systemd/system\n")
		fmt.Fprintf(&b, "mount --bind %s /etc/systemd/system\n", sdShQuote(s.UnitDir))
	}
	b.WriteString("[ -d /run/systemd ] || mkdir -p /run/systemd\n")
	b.WriteString("mount -t tmpfs -o mode=0755,size=16m evictguard-e2e-systemd /run/systemd\n")
	b.WriteString("mkdir /run/systemd/system\n")
	s.writeWatchdog(&b)
	fmt.Fprintf(&b, "exec %s --user --unit=%s\n", sdShQuote(manager), SandboxTarget)
	return b.String()
}

// writeWatchdog adds a background watchdog to the wrapper: if the test binary dies without
// tearing the sandbox down, it kills everything in the sandbox cgroups and removes them.
// PDEATHSIG cannot do this: it does not reach the units, and the manager does not keep it
// (observed: systemd --user survived a SIGKILLed test binary).
func (s *Systemd) writeWatchdog(b *strings.Builder) {
	track, _ := s.trackingHierarchy()
	parent := filepath.Dir(s.Cgroup)
	fmt.Fprintf(b, "# Watchdog: clean up if the test binary (pid %d) dies first.\n", os.Getpid())
	fmt.Fprintf(b, "( trap '' TERM HUP INT\n  while kill -0 %d 2>/dev/null; do sleep 0.5; done\n", os.Getpid())
	for _, h := range s.hierarchies {
		// "0" moves the writing process (this subshell) out of the cgroups it is about to empty.
		fmt.Fprintf(b, "  echo 0 > %s 2>/dev/null || true\n", sdShQuote(filepath.Join(h.mount, parent, "cgroup.procs")))
	}
	leaf := sdShQuote(filepath.Join(track.mount, s.Cgroup))
	fmt.Fprintf(b, "  i=0; while [ $i -lt 100 ]; do i=$((i+1)); pids=$(find %s -name cgroup.procs -exec cat {} + 2>/dev/null); [ -n \"$pids\" ] || break; kill -9 $pids 2>/dev/null || true; sleep 0.1; done\n", leaf)
	for _, h := range s.hierarchies {
		fmt.Fprintf(b, "  find %s -depth -type d -exec rmdir {} + 2>/dev/null || true\n", sdShQuote(filepath.Join(h.mount, s.Cgroup)))
	}
	b.WriteString(") </dev/null >/dev/null 2>&1 &\n")
}

// Env returns the environment a client process (systemctl --user, busctl --user) needs to talk
// to this manager.
func (s *Systemd) Env() []string {
	return []string{"XDG_RUNTIME_DIR=" + s.RuntimeDir, "DBUS_SESSION_BUS_ADDRESS=" + s.BusAddress}
}

// WriteUnit writes UnitDir/name and returns its path. The manager sees a new or changed file
// after a daemon-reload (a unit never loaded before is also found on first use).
func (s *Systemd) WriteUnit(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(s.UnitDir, name)
	sdWriteFile(t, p, content)
	return p
}

// WriteDropIn writes UnitDir/unit.d/file and returns its path.
func (s *Systemd) WriteDropIn(t testing.TB, unit, file, content string) string {
	t.Helper()
	p := filepath.Join(s.UnitDir, unit+".d", file)
	sdWriteFile(t, p, content)
	return p
}

// Conn returns a go-systemd connection to this manager, closed at cleanup.
func (s *Systemd) Conn(t testing.TB) *sddbus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialSystemd(ctx, s.BusAddress)
	if err != nil {
		t.Fatalf("connect to sandboxed systemd at %s: %v", s.BusAddress, err)
	}
	t.Cleanup(c.Close)
	return c
}

// UnitPIDs returns the processes in the cgroup of unit (every process the unit owns, not just
// its main PID).
func (s *Systemd) UnitPIDs(unit string) ([]int, error) {
	h, ok := s.trackingHierarchy()
	if !ok {
		return nil, errors.New("no cgroup hierarchy to read")
	}
	return sdCgroupPIDs(filepath.Join(h.mount, s.Cgroup, "app.slice", unit))
}

// PIDs returns every process in the sandbox: the manager, dbus-daemon and all units.
func (s *Systemd) PIDs() ([]int, error) {
	h, ok := s.trackingHierarchy()
	if !ok {
		return nil, errors.New("no cgroup hierarchy to read")
	}
	return sdCgroupPIDs(filepath.Join(h.mount, s.Cgroup))
}

func (s *Systemd) trackingHierarchy() (sdCgroupHierarchy, bool) {
	for _, h := range s.hierarchies {
		if h.v2 {
			return h, true
		}
	}
	for _, h := range s.hierarchies {
		if h.name == "name=systemd" {
			return h, true
		}
	}
	return sdCgroupHierarchy{}, false
}

// teardown stops the manager gracefully (it stops its units, honouring DefaultTimeoutStopSec),
// then kills whatever is left in the sandbox cgroups, in every hierarchy.
func (s *Systemd) teardown(t testing.TB) {
	t.Helper()
	if ok, _ := s.Proc.Exited(); !ok {
		_ = s.Proc.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.Proc.done:
		case <-time.After(20 * time.Second):
			t.Errorf("sandboxed systemd did not exit within 20s of SIGTERM; killing it")
		}
	}
	var left []int
	for _, h := range s.hierarchies {
		pids, err := sdKillCgroupTree(filepath.Join(h.mount, s.Cgroup), 10*time.Second)
		if err != nil {
			t.Errorf("kill processes in %s%s: %v", h.mount, s.Cgroup, err)
		}
		left = append(left, pids...)
	}
	_ = s.Proc.Stop(5 * time.Second)
	if len(left) > 0 {
		t.Logf("sandboxed systemd: killed %d process(es) left in its cgroups after the manager exited: %v", len(left), left)
	}
}

// DialSystemd connects go-systemd to the systemd manager on the bus at address (EXTERNAL auth
// as the current uid, then Hello). The connection lives until Close; ctx only bounds dialing.
func DialSystemd(ctx context.Context, address string) (*sddbus.Conn, error) {
	type result struct {
		c   *sddbus.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sddbus.NewConnection(func() (*dbus.Conn, error) {
			// Not dbus.WithContext(ctx): godbus closes the connection when that context ends.
			conn, err := dbus.Dial(address)
			if err != nil {
				return nil, err
			}
			if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
				conn.Close()
				return nil, err
			}
			if err := conn.Hello(); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		})
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// ---- cgroups ----

// sdCgroupHierarchy is a mounted cgroup hierarchy the manager places processes in.
type sdCgroupHierarchy struct {
	name  string // "name=systemd", "memory", …, or "" for cgroup2
	mount string // e.g. /sys/fs/cgroup/memory
	own   string // this process's cgroup path in it
	v2    bool
}

// systemdV1Controllers are the cgroup-v1 hierarchies systemd puts unit processes in.
var systemdV1Controllers = map[string]bool{
	"name=systemd": true, "cpu": true, "cpuacct": true, "blkio": true, "memory": true,
	"devices": true, "pids": true,
}

func sdCgroupHierarchies() ([]sdCgroupHierarchy, error) {
	own := map[string]string{} // controller -> path; "" for v2
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			own[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hs []sdCgroupHierarchy
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || len(fields) < 5 {
			continue
		}
		fstype, mp, opts := fields[sep+1], unescapeMount(fields[4]), fields[sep+3]
		switch fstype {
		case "cgroup2":
			if p, ok := own[""]; ok {
				hs = append(hs, sdCgroupHierarchy{mount: mp, own: p, v2: true})
			}
		case "cgroup":
			for _, o := range strings.Split(opts, ",") {
				if systemdV1Controllers[o] {
					if p, ok := own[o]; ok {
						hs = append(hs, sdCgroupHierarchy{name: o, mount: mp, own: p})
					}
					break
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted")
	}
	return hs, nil
}

// sdSandboxCgroupPath nests the sandbox below the deepest cgroup this process is in (on this
// host that is the memory cgroup the test runner accounts the job in), so the manager and its
// units stay inside whatever accounting or limits apply to the test.
func sdSandboxCgroupPath(hs []sdCgroupHierarchy, name string) string {
	base := "/"
	for _, h := range hs {
		if len(h.own) > len(base) {
			base = h.own
		}
	}
	return filepath.Join(base, "evictguard-e2e", name)
}

// sdCreateCgroups creates path in every hierarchy. Another sandbox may be removing an empty
// shared parent at the same moment, hence the retries.
func sdCreateCgroups(hs []sdCgroupHierarchy, path string) error {
	for _, h := range hs {
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if err = os.MkdirAll(filepath.Join(h.mount, path), 0o755); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sdRemoveCgroups removes path (and every cgroup below it) in every hierarchy, then its
// parents while they are empty, stopping at the cgroup this process is in (or its ancestors),
// which are not ours. rmdir fails on a cgroup that has children or processes, so a parent
// shared with a sandbox still running stays.
func sdRemoveCgroups(hs []sdCgroupHierarchy, path string) error {
	var errs []error
	for _, h := range hs {
		if err := sdRmdirTree(filepath.Join(h.mount, path)); err != nil {
			errs = append(errs, err)
			continue
		}
		for dir := filepath.Dir(path); dir != "/" && dir != h.own && !strings.HasPrefix(h.own, dir+"/"); dir = filepath.Dir(dir) {
			if err := syscall.Rmdir(filepath.Join(h.mount, dir)); err != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// SweepSystemdCgroups removes sandbox cgroups that an interrupted earlier run left below this
// process's cgroup: those whose manager is gone (nothing in init.scope) and which are older
// than a minute (a sandbox being set up right now has no manager yet). Processes still in them
// are killed first.
func SweepSystemdCgroups() error {
	hs, err := sdCgroupHierarchies()
	if err != nil {
		return err
	}
	parent := filepath.Dir(sdSandboxCgroupPath(hs, "x"))
	var errs []error
	for _, h := range hs {
		entries, err := os.ReadDir(filepath.Join(h.mount, parent))
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			leaf := filepath.Join(h.mount, parent, e.Name())
			if fi, err := os.Stat(leaf); err != nil || time.Since(fi.ModTime()) < time.Minute {
				continue
			}
			if mgr, _ := sdCgroupPIDs(filepath.Join(leaf, "init.scope")); len(mgr) > 0 {
				continue
			}
			if _, err := sdKillCgroupTree(leaf, 10*time.Second); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := sdRemoveCgroups([]sdCgroupHierarchy{h}, filepath.Join(parent, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// sdRmdirTree removes a cgroup directory and its children, deepest first. cgroup directories
// hold only virtual files, so rmdir (not unlink) is the way; a cgroup with live processes stays
// busy for a moment after they died, hence the retries.
func sdRmdirTree(root string) error {
	var last error
	for attempt := 0; attempt < 20; attempt++ {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if len(dirs) == 0 {
			return nil
		}
		last = nil
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("rmdir %s: %w", dirs[i], err)
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// sdCgroupPIDs lists the processes in the cgroup at dir and every cgroup below it.
func sdCgroupPIDs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// sdKillCgroupTree SIGKILLs every process in the cgroup tree at dir until it is empty (a process
// may fork while being killed) and returns the PIDs it killed.
func sdKillCgroupTree(dir string, timeout time.Duration) ([]int, error) {
	var killed []int
	seen := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		pids, err := sdCgroupPIDs(dir)
		if err != nil {
			return killed, err
		}
		live := pids[:0]
		for _, pid := range pids {
			if !isZombieOrGone(pid) {
				live = append(live, pid)
			}
		}
		if len(live) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("processes still alive after %s: %v", timeout, live)
		}
		for _, pid := range live {
			if !seen[pid] {
				seen[pid] = true
				killed = append(killed, pid)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sdWriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("create %s: %v", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// sdShQuote quotes s for a POSIX shell.
func sdShQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
