package harness

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdSandbox starts the sandboxed manager, runs a unit that forks a child outside its
// main process and ignores SIGTERM, and checks that teardown leaves no process, mount or
// cgroup behind.
func TestSystemdSandbox(t *testing.T) {
	RequireRoot(t)
	var (
		cgroup string
		hs     []sdCgroupHierarchy
		pids   []int
		dir    string
	)
	t.Run("run", func(t *testing.T) {
		s := StartSystemd(t)
		dir, cgroup, hs = s.Dir, s.Cgroup, s.hierarchies
		out := filepath.Join(s.Dir, "out")
		s.WriteUnit(t, "stubborn.service", `[Service]
ExecStart=/bin/sh -c 'trap "" TERM; sleep 1000 & echo "$FOO $PWD" > `+out+`; wait'
Environment=FOO=bar
TimeoutStopSec=2s
`)
		conn := s.Conn(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ch := make(chan string, 1)
		if _, err := conn.StartUnitContext(ctx, "stubborn.service", "replace", ch); err != nil {
			t.Fatalf("start unit: %v", err)
		}
		if r := <-ch; r != "done" {
			t.Fatalf("start job result %q\n%s", r, s.Proc.LogTail(3000))
		}
		err := WaitFor(ctx, 10*time.Second, s.Proc, func() error {
			b, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			if got, want := strings.TrimSpace(string(b)), "bar "+s.Home; got != want {
				t.Errorf("unit wrote %q, want %q (Environment= and default cwd $HOME)", got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var perr error
		pids, perr = s.UnitPIDs("stubborn.service")
		if perr != nil || len(pids) < 2 {
			t.Fatalf("unit pids = %v, %v; want the shell and its sleep", pids, perr)
		}
		all, _ := s.PIDs()
		t.Logf("sandbox cgroup %s holds %d processes; unit holds %v", s.Cgroup, len(all), pids)
		// The host's own processes must not have been moved into the sandbox.
		if own, _ := os.ReadFile("/proc/self/cgroup"); strings.Contains(string(own), "evictguard-e2e") {
			t.Errorf("test process was moved into the sandbox cgroup:\n%s", own)
		}
		if b, _ := os.ReadFile("/proc/1/cgroup"); strings.Contains(string(b), "init.scope") {
			t.Errorf("PID 1 was moved into an init.scope:\n%s", b)
		}
	})
	if t.Failed() {
		return
	}
	for _, pid := range pids {
		if !isZombieOrGone(pid) {
			t.Errorf("unit process %d survived teardown", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h.mount, cgroup)); !os.IsNotExist(err) {
			t.Errorf("cgroup %s%s still exists (err %v)", h.mount, cgroup, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir %s still exists", dir)
	}
	l, err := FindLeftovers()
	if err != nil {
		t.Fatal(err)
	}
	// Other tests may be running under BaseDir at the same time: only this sandbox counts.
	for _, pid := range l.PIDs {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		cwd, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if strings.Contains(string(cmd), dir) || strings.HasPrefix(cwd, dir) {
			t.Errorf("leftover process %d: %q (cwd %s)", pid, cmd, cwd)
		}
	}
	for _, m := range l.Mounts {
		if strings.HasPrefix(m, dir) {
			t.Errorf("leftover mount %s", m)
		}
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), "evictguard-e2e-systemd") {
		t.Errorf("sandbox tmpfs visible in the test's mount namespace")
	}
}
