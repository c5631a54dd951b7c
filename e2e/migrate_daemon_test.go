package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
)

// daemonMigration is a dockerMigration whose nodefs tmpfs also holds the root dir of a real
// kubelet, run as kubelet.service (kubeadm drop-in) under the same sandboxed systemd with
// the harness's containerd as its CRI runtime, filled so that nodefs.available is in warning.
// evictguard discovers the kubelet from its process, as on a node; the migration stops and
// starts kubelet.service around docker.service.
type daemonMigration struct {
	*dockerMigration
	kubelet          *harness.KubeletUnit
	kubeletRoot      string
	oldRoot, newRoot string
	digest, lines    string
}

func startDaemonMigration(t *testing.T) *daemonMigration {
	t.Helper()
	m := startDockerMigration(t, 160<<20, 160<<20)
	dm := &daemonMigration{dockerMigration: m, kubeletRoot: filepath.Join(m.a, "kubelet"),
		oldRoot: filepath.Join(m.a, "docker"), newRoot: filepath.Join(m.b, "docker")}
	// The kubelet's CRI runtime keeps its root on nodefs too: imagefs is not a filesystem of
	// its own, so moving docker's data root off nodefs is what the planner can offer.
	c := harness.StartContainerd(t, harness.ContainerdOptions{Root: filepath.Join(m.a, "containerd")})
	k := harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: c, RootDir: dm.kubeletRoot,
		ConfigExtra: "evictionHard:\n  nodefs.available: \"10%\"\n  imagefs.available: \"10%\"\n"})
	dm.kubelet = harness.StartKubeletUnit(t, m.sd, k, map[string]string{"10-kubeadm.conf": "[Service]\nExecStart=\nExecStart=" + strings.Join(k.Args, " ") + "\n"})
	if err := k.WaitReady(t.Context(), 90*time.Second); err != nil {
		t.Fatalf("kubelet.service not ready: %v\n%s", err, tail(dm.kubelet.LogText(0), 3000))
	}
	defer time.Sleep(2 * time.Second) // the policy's minKubeletUptime (1s)
	dm.digest, dm.lines = dataDigestLines(t, dm.oldRoot)

	// nodefs.available to warning: 12 % available against a 10 % threshold and a 5 % margin.
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.a, &st); err != nil {
		t.Fatal(err)
	}
	capacity, avail := int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	fill(t, filepath.Join(dm.kubeletRoot, "fill"), avail-capacity*12/100)
	return dm
}

// checkDiscovered asserts the daemon found the real kubelet as on a node, not from flags:
// source is where its arguments came from ("/cmdline" of the running kubelet's process, or
// the unit's kubeadm drop-in under --host-root when the kubelet is stopped), and its
// --config file was read.
func (dm *daemonMigration) checkDiscovered(t *testing.T, log, source string) {
	t.Helper()
	_, line, _ := strings.Cut(log, `msg="kubelet thresholds" `)
	line, _, _ = strings.Cut(line, "\n")
	for _, want := range []string{"kubeletFound=true ", "rootDir=" + dm.kubeletRoot + " ", source, dm.kubelet.ConfigPath} {
		if !strings.Contains(line, want) {
			t.Errorf("daemon log's kubelet discovery lacks %q: %q", want, line)
		}
	}
}

// kubeletPIDs are the processes of kubelet.service.
func (dm *daemonMigration) kubeletPIDs(t *testing.T) []int {
	t.Helper()
	pids, err := dm.sd.UnitPIDs("kubelet.service")
	if err != nil || len(pids) == 0 {
		t.Fatalf("kubelet.service processes: %v %v", pids, err)
	}
	return pids
}

// checkKubelet asserts the real kubelet is healthy and serves /configz with the thresholds.
func (dm *daemonMigration) checkKubelet(t *testing.T) {
	t.Helper()
	if err := dm.kubelet.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatalf("kubelet not healthy after the migration: %v\n%s", err, tail(dm.kubelet.LogText(0), 3000))
	}
	hard, err := dm.kubelet.EvictionHard()
	if err != nil || hard["nodefs.available"] != "10%" {
		t.Errorf("kubelet /configz evictionHard = %v, %v", hard, err)
	}
}

// policy writes a remediation policy allowing the migration to newRoot.
func (dm *daemonMigration) policy(t *testing.T, dry bool) string {
	t.Helper()
	p := filepath.Join(harness.TempDir(t, "policy"), "policy.yaml")
	writeFile(t, p, fmt.Sprintf(`dryRun: %t
minKubeletUptime: 1s
stableFor: 2s
migration:
  to: %s
  runtime: docker
  config: %s
  units: [docker.service]
`, dry, dm.newRoot, dm.docker.ConfigPath))
	return p
}

// nodeArgs are the flags of run and apply for this node. No --kubelet-cmdline or
// --kubelet-version: the kubelet is discovered (process, else unit). --host-root makes the
// sandbox's unit directory /etc/systemd/system, where kubelet.service is found while it is
// stopped (after the crash) and without which the planner reports "no kubelet.service
// found"; --healthz because the harness kubelet serves on a free port, not 10248.
func (dm *daemonMigration) nodeArgs(policyFile string) []string {
	return []string{"--host-root", dm.kubelet.HostRoot, "--runtime", "docker", "--docker-socket", dm.docker.Socket,
		"--policy", policyFile, "--state-dir", dm.stateDir, "--bus-address", dm.sd.BusAddress,
		"--unit", "kubelet.service", "--healthz", dm.kubelet.HealthzURL()}
}

func (dm *daemonMigration) daemon(t *testing.T, name, policyFile string, port int) *harness.Process {
	t.Helper()
	args := append([]string{"run", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--interval", "1s", "--log-level", "debug"}, dm.nodeArgs(policyFile)...)
	return harness.Start(t, harness.TempDir(t, name), name, nil, evictguardBinary(t), args...)
}

// attemptsMetric returns the line of evictguard_remediation_attempts_total for the
// migration with result.
func attemptsMetric(port int, result string) (string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "evictguard_remediation_attempts_total{") && strings.Contains(l, `action="migrate-data-root"`) && strings.Contains(l, `result="`+result+`"`) {
			return l, nil
		}
	}
	return "", fmt.Errorf("no evictguard_remediation_attempts_total{action=\"migrate-data-root\",result=%q} yet", result)
}

// checkMigrated asserts docker runs on the new root with everything intact and the old root
// gone (keepOld is false).
func (dm *daemonMigration) checkMigrated(t *testing.T) {
	t.Helper()
	dm.checkIntact(t, dm.newRoot)
	dm.checkDaemonJSON(t, dm.newRoot)
	assertSameData(t, dm.newRoot, dm.digest, dm.lines)
	if _, err := os.Stat(dm.oldRoot); !os.IsNotExist(err) {
		t.Errorf("old root %s still there (keepOld is false): %v", dm.oldRoot, err)
	}
}

// TestMigrateDaemon runs `evictguard run` with a policy allowing migration: a real dockerd
// (a unit of the sandboxed systemd) keeps its data root on the nodefs tmpfs next to the root
// dir of a real kubelet (kubelet.service, CRI containerd); when nodefs.available goes to
// warning the daemon's planner offers migrate-data-root and the remediation pass carries it
// out to a second tmpfs (restarting the kubelet, healthy again after) through the steps and
// journal of `evictguard migrate`. First with a dry-run policy, which only reports
// the exact plan.
func TestMigrateDaemon(t *testing.T) {
	dm := startDaemonMigration(t)

	t.Run("dry run only reports", func(t *testing.T) {
		before := dm.kubeletPIDs(t)
		port := harness.FreePort(t)
		p := dm.daemon(t, "evictguard-run-migrate-dry", dm.policy(t, true), port)
		err := harness.WaitFor(t.Context(), 90*time.Second, p, func() error {
			if !strings.Contains(p.Log(), "would migrate docker data root "+dm.oldRoot+" → "+dm.newRoot) {
				return fmt.Errorf("no dry-run migration report yet")
			}
			_, err := attemptsMetric(port, journal.ResultDryRun)
			return err
		})
		if err != nil {
			t.Fatalf("%v\ndaemon log:\n%s", err, p.LogTail(6000))
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Logf("stop daemon: %v", err)
		}
		dm.checkDiscovered(t, p.Log(), "/cmdline")
		// The exact plan: sizes, expected downtime and daemon.json's diff.
		for _, want := range []string{"preflight passed: ", "  Downtime  ~", "  Old root  removed after verification",
			`-  "graph": "` + dm.oldRoot + `",`, `+  "data-root": "` + dm.newRoot + `",`, "the policy is a dry run"} {
			if !strings.Contains(p.Log(), want) {
				t.Errorf("dry-run plan lacks %q:\n%s", want, p.LogTail(6000))
			}
		}
		if got := dm.dockerInfoRoot(t); got != dm.oldRoot {
			t.Fatalf("dry run moved the data root to %s", got)
		}
		if ents, _ := os.ReadDir(dm.newRoot); len(ents) > 0 {
			t.Errorf("dry run wrote to %s", dm.newRoot)
		}
		if after := dm.kubeletPIDs(t); !slices.Equal(after, before) {
			t.Errorf("dry run restarted the kubelet: processes %v, before %v", after, before)
		}
	})

	t.Run("migrates on warning", func(t *testing.T) {
		before := dm.kubeletPIDs(t)
		port := harness.FreePort(t)
		p := dm.daemon(t, "evictguard-run-migrate", dm.policy(t, false), port)
		err := harness.WaitFor(t.Context(), 240*time.Second, p, func() error {
			if !strings.Contains(p.Log(), "migrated docker data root "+dm.oldRoot+" → "+dm.newRoot) {
				return fmt.Errorf("no applied migration report yet")
			}
			// The daemon's monitor follows the data root (Monitor.SetLayout), no restart needed.
			if !strings.Contains(p.Log(), `msg="filesystems re-discovered"`) {
				return fmt.Errorf("the daemon has not re-discovered its filesystems yet")
			}
			_, err := attemptsMetric(port, journal.ResultApplied)
			return err
		})
		if err != nil {
			t.Fatalf("%v\ndaemon log:\n%s", err, p.LogTail(8000))
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Logf("stop daemon: %v", err)
		}
		dm.checkMigrated(t)
		dm.checkKubelet(t)
		if after := dm.kubeletPIDs(t); slices.Equal(after, before) {
			t.Errorf("the migration did not restart the kubelet: processes %v", after)
		}
	})
}

// TestMigrateDaemonRecovers: `evictguard apply --yes` starts the migration the policy allows
// and is SIGKILLed after the verification (runtime and kubelet stopped); `evictguard run`
// finishes it on start, as `evictguard migrate --resume` does, and reports it recovered; the
// real kubelet is healthy again and serves /configz.
func TestMigrateDaemonRecovers(t *testing.T) {
	dm := startDaemonMigration(t)
	policy := dm.policy(t, false)
	out, errOut, code := runEvictguardEnv(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=" + migration.StepVerify},
		append([]string{"apply", "--yes"}, dm.nodeArgs(policy)...)...)
	if code != -1 && code != 137 {
		t.Fatalf("apply with a crash after verify: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "Data-root migration:") || !strings.Contains(out, `+  "data-root": "`+dm.newRoot+`",`) {
		t.Errorf("apply did not print the migration plan:\n%s", out)
	}
	ops := dm.journalState(t)
	if last := ops[len(ops)-1]; last.Kind != journal.KindMigrateDataRoot || last.State != journal.StateInProgress || last.Step != migration.StepVerify {
		t.Fatalf("journal after the crash: %+v", last)
	}

	port := harness.FreePort(t)
	p := dm.daemon(t, "evictguard-run-migrate-recover", policy, port)
	err := harness.WaitFor(t.Context(), 240*time.Second, p, func() error {
		if !strings.Contains(p.Log(), "migration finished after a crash after step verify") {
			return fmt.Errorf("no recovered migration report yet")
		}
		_, err := attemptsMetric(port, journal.ResultRecovered)
		return err
	})
	if err != nil {
		t.Fatalf("%v\ndaemon log:\n%s", err, p.LogTail(8000))
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Logf("stop daemon: %v", err)
	}
	// The crash left kubelet.service stopped: the daemon reads the unit and its drop-in.
	dm.checkDiscovered(t, p.Log(), "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
	if log := p.Log(); !strings.Contains(log, "resuming an interrupted data-root migration") {
		t.Errorf("daemon log does not show the resume:\n%s", tail(log, 4000))
	} else if !strings.Contains(log, `msg="filesystems re-discovered"`) {
		t.Errorf("the daemon did not re-discover its filesystems after the recovery:\n%s", tail(log, 4000))
	}
	ops = dm.journalState(t)
	if last := ops[len(ops)-1]; last.State != journal.StateDone {
		t.Errorf("migration %s after the daemon's recovery: %s", last.ID, last.State)
	}
	dm.checkMigrated(t)
	dm.checkKubelet(t)
}
