package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestMigrateFollow: `evictguard run` follows a data root moved outside it, without a
// restart. A real dockerd (docker.service of the sandboxed systemd) keeps its data root on
// the nodefs tmpfs; two daemons watch it: "journal" with monitor.rediscoverInterval: 0s in
// its --config file and the migration's --state-dir, so only a finished migration in the
// journal can make it look again, and "periodic" with --rediscover-interval 2s and a state
// dir of its own, so only the periodic re-discovery can. Then:
//
//   - `evictguard migrate --runtime docker --to <second tmpfs> --yes`, a separate process as
//     an operator runs it: both daemons report imagefs on the second tmpfs (dedicated) on
//     /metrics within seconds, each for its own reason;
//   - the data root moved back by hand (docker.service stopped, mv, daemon.json edited,
//     started): "periodic" follows it back to nodefs, "journal" (nothing journaled, periodic
//     off) keeps the layout it has.
func TestMigrateFollow(t *testing.T) {
	m := startDockerMigration(t, 96<<20, 160<<20)
	kubeletRoot := filepath.Join(m.a, "kubelet")
	if err := os.MkdirAll(kubeletRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")

	dir := harness.TempDir(t, "evictguard-follow")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\nmonitor:\n  rediscoverInterval: 0s\n")
	start := func(name string, extra ...string) (*harness.Process, int) {
		port := harness.FreePort(t)
		args := append([]string{"run", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--interval", "1s", "--log-level", "debug",
			"--kubelet-cmdline", "--root-dir=" + kubeletRoot, "--kubelet-version", "1.37",
			"--runtime", "docker", "--docker-socket", m.docker.Socket}, extra...)
		return harness.Start(t, dir, name, nil, evictguardBinary(t), args...), port
	}
	journal, jPort := start("evictguard-run-journal", "--config", cfg, "--state-dir", m.stateDir)
	periodic, pPort := start("evictguard-run-periodic", "--rediscover-interval", "2s", "--state-dir", harness.TempDir(t, "evictguard-state-periodic"))
	daemons := []struct {
		p    *harness.Process
		port int
	}{{journal, jPort}, {periodic, pPort}}

	// waitImagefs waits until the daemon's /metrics shows imagefs at path on mountpoint,
	// with both daemons alive throughout.
	waitImagefs := func(p *harness.Process, port int, path, mountpoint string, timeout time.Duration) time.Duration {
		t.Helper()
		begin := time.Now()
		err := harness.WaitFor(t.Context(), timeout, p, func() error {
			for _, d := range daemons {
				if ok, err := d.p.Exited(); ok {
					return fmt.Errorf("%s exited: %w", d.p.Name, err)
				}
			}
			gotPath, gotMount, failed, err := imagefsMetric(port)
			if err != nil {
				return err
			}
			if gotPath != path || gotMount != mountpoint || failed {
				return fmt.Errorf("imagefs is %s on %s (device error %t), want %s on %s", gotPath, gotMount, failed, path, mountpoint)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v\nlog:\n%s", p.Name, err, p.LogTail(6000))
		}
		return time.Since(begin)
	}
	for _, d := range daemons {
		waitImagefs(d.p, d.port, from, m.a, 60*time.Second)
		if log := d.p.Log(); !strings.Contains(log, "dedicatedImageFs=false") {
			t.Errorf("%s did not start with imagefs on nodefs:\n%s", d.p.Name, tail(log, 3000))
		}
	}

	t.Run("migrate from a shell", func(t *testing.T) {
		out, errOut, code := runEvictguardEnv(t, nil, m.args("--to", to)...)
		if code != 0 {
			t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
		}
		if got := m.dockerInfoRoot(t); got != to {
			t.Fatalf("docker info DockerRootDir = %s after the migration, want %s", got, to)
		}
		took := waitImagefs(journal, jPort, to, m.b, 20*time.Second)
		t.Logf("the journal-triggered daemon followed %v after migrate exited", took.Round(time.Millisecond))
		took = waitImagefs(periodic, pPort, to, m.b, 20*time.Second)
		t.Logf("the periodic daemon followed %v after migrate exited", took.Round(time.Millisecond))
		checkFollowed(t, journal, `reason="migration finished: `, "imagefs now "+to+" on "+m.b, "dedicatedImageFs=true")
		checkFollowed(t, periodic, "reason=periodic", "imagefs now "+to+" on "+m.b, "dedicatedImageFs=true")
	})

	t.Run("moved back by hand", func(t *testing.T) {
		byHand := filepath.Join(m.a, "docker-by-hand")
		harness.StopUnit(m.sd, m.sd.Conn(t), "docker.service")
		if out, err := exec.Command("mv", to, byHand).CombinedOutput(); err != nil {
			t.Fatalf("mv %s %s: %v\n%s", to, byHand, err, out)
		}
		b, err := os.ReadFile(m.docker.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, m.docker.ConfigPath, strings.Replace(string(b), `"`+to+`"`, `"`+byHand+`"`, 1))
		harness.StartUnit(t, m.sd, "docker.service")
		err = harness.WaitFor(t.Context(), 30*time.Second, nil, func() error {
			out, err := m.docker.TryCLI("info", "--format", "{{.DockerRootDir}}")
			switch {
			case err != nil:
				return fmt.Errorf("docker info: %w: %s", err, out)
			case strings.TrimSpace(out) != byHand:
				return fmt.Errorf("docker info DockerRootDir = %q, want %s", out, byHand)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		took := waitImagefs(periodic, pPort, byHand, m.a, 20*time.Second)
		t.Logf("the periodic daemon followed %v after dockerd answered", took.Round(time.Millisecond))
		checkFollowed(t, periodic, "reason=periodic", "imagefs now "+byHand+" on "+m.a, "dedicatedImageFs=false")

		// Periodic re-discovery off and nothing journaled: "journal" keeps its layout, and
		// its statfs of the directory that moved away fails (why the default is 1m, not 0).
		time.Sleep(5 * time.Second)
		path, mount, failed, err := imagefsMetric(jPort)
		if err != nil || path != to || mount != m.b {
			t.Errorf("the journal-only daemon reports imagefs %s on %s (%v), want it unchanged: %s on %s", path, mount, err, to, m.b)
		}
		t.Logf("the journal-only daemon still watches %s: evictguard_filesystem_device_error %t", path, failed)
		if n := strings.Count(journal.Log(), `msg="filesystems changed"`); n != 1 {
			t.Errorf("the journal-only daemon changed its filesystems %d times, want once:\n%s", n, journal.LogTail(4000))
		}
	})
}

// checkFollowed asserts the daemon logged one "filesystems changed" line with every want.
func checkFollowed(t *testing.T, p *harness.Process, want ...string) {
	t.Helper()
	for _, line := range strings.Split(p.Log(), "\n") {
		if !strings.Contains(line, `msg="filesystems changed"`) {
			continue
		}
		missing := ""
		for _, w := range want {
			if !strings.Contains(line, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
	}
	t.Errorf("%s logged no \"filesystems changed\" line with %q:\n%s", p.Name, want, p.LogTail(4000))
}

// imagefsMetric returns the path and mountpoint labels of imagefs on the daemon's /metrics
// (evictguard_filesystem_device_error, exported whether its statfs works or not) and whether
// its statfs failed.
func imagefsMetric(port int) (path, mountpoint string, failed bool, err error) {
	b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return "", "", false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "evictguard_filesystem_device_error{") || !strings.Contains(l, `role="imagefs"`) {
			continue
		}
		return metricLabel(l, "path"), metricLabel(l, "mountpoint"), strings.HasSuffix(l, "} 1"), nil
	}
	return "", "", false, fmt.Errorf("no imagefs in evictguard_filesystem_device_error yet")
}

// metricLabel is the value of label name in an exposition line (no escapes in our paths).
func metricLabel(line, name string) string {
	_, v, ok := strings.Cut(line, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, `"`)
	return v
}
