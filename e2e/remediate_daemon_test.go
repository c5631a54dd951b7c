package e2e

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestRemediateDaemon runs `evictguard run --policy …` against kubelet.service: when nodefs
// crosses the threshold the daemon carries out the same journaled apply as `evictguard
// apply`; and on start it recovers an operation a crash (SIGKILL after the write) left in the
// journal.
func TestRemediateDaemon(t *testing.T) {
	start := time.Now()
	n := startNode(t, layoutKubeadm17, testPolicy)
	orig := n.unitFiles(t)
	time.Sleep(2 * time.Second) // minKubeletUptime
	daemon := func(name string) *harness.Process {
		args := append([]string{"run", "--listen", fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), "--interval", "1s", "--log-level", "debug"}, n.args()...)
		return harness.Start(t, harness.TempDir(t, name), name, nil, evictguardBinary(t), args...)
	}
	// waitLowered waits for the daemon to report result (after verification) and for /configz
	// to show the lowered map.
	waitLowered := func(p *harness.Process, result string) {
		t.Helper()
		err := harness.WaitFor(t.Context(), 150*time.Second, p, func() error {
			if !strings.Contains(p.Log(), "result="+result) {
				return fmt.Errorf("no result=%s report in the daemon log yet", result)
			}
			h, err := n.EvictionHard()
			if err != nil {
				return err
			}
			if !maps.Equal(h, lowered) {
				return fmt.Errorf("/configz evictionHard %v", h)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\ndaemon log:\n%s", err, p.LogTail(6000))
		}
	}

	t.Run("acts on a breach", func(t *testing.T) {
		p := daemon("evictguard-run")
		time.Sleep(3 * time.Second) // a few ok evaluations first
		n.fillTo(t, 0.085)
		waitLowered(p, "applied")
		if err := p.Stop(10 * time.Second); err != nil {
			t.Logf("stop daemon: %v", err)
		}
	})

	t.Run("recovers on start", func(t *testing.T) {
		for path, c := range orig {
			writeFile(t, path, c)
		}
		restartUnit(t, n)
		out, errOut, code := n.apply(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=write"})
		if code != -1 && code != 137 {
			t.Fatalf("apply with a crash after write: exit %d\n%s\n%s", code, out, errOut)
		}
		p := daemon("evictguard-run-recover")
		waitLowered(p, "recovered")
		if log := p.Log(); !strings.Contains(log, "recovering interrupted remediation") || !strings.Contains(log, "crash after step write") {
			t.Errorf("daemon log does not show the recovery of the write:\n%s", tail(log, 4000))
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Logf("stop daemon: %v", err)
		}
	})
	t.Logf("daemon: %s", time.Since(start).Round(time.Second))
}
