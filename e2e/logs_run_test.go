package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestLogsRunFlags runs `evictguard run` as a user would, with the log budget and the ladder
// enabled by flags, on a tmpfs nodefs: the ballast is created when there is room, the budget
// files appear, the gauge is served, and when the filesystem nears its threshold the ballast
// is released and counted in evictguard_reclaimed_bytes_total.
func TestLogsRunFlags(t *testing.T) {
	harness.RequireRoot(t)
	nodefs := harness.TmpFS(t, 64*mib, 0)
	for _, d := range []string{"kubelet", "buffer"} {
		if err := os.MkdirAll(filepath.Join(nodefs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := harness.TempDir(t, "state")
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	p := harness.Start(t, state, "evictguard", nil, evictguardBinary(t), "run", "--listen", listen, "--interval", "200ms",
		"--kubelet-cmdline", "--root-dir="+filepath.Join(nodefs, "kubelet")+" --eviction-hard=nodefs.available<10%",
		"--kubelet-version", "1.37", "--log-dir", filepath.Join(nodefs, "buffer"),
		"--log-budget-file", filepath.Join(state, "log-budget.env"),
		"--ballast-size", "8Mi", "--ballast-path", filepath.Join(nodefs, "ballast"),
		"--reclaim", "ballast", "--reclaim-low-headroom", "16Mi")
	ctx := context.Background()
	ballast := filepath.Join(nodefs, "ballast")
	err := harness.WaitFor(ctx, 30*time.Second, p, func() error {
		st, err := os.Stat(ballast)
		if err != nil || st.Size() != 8*mib {
			return fmt.Errorf("no ballast yet: %w", err)
		}
		if v := envValue(filepath.Join(state, "log-budget.env"), "EVICTGUARD_LOG_BUDGET_NODEFS_BYTES"); v <= 0 {
			return fmt.Errorf("no nodefs budget in the env file yet (%d)", v)
		}
		for _, f := range []string{"log-budget.fluent-bit.conf", "log-budget.fluentd.conf"} {
			if _, err := os.Stat(filepath.Join(state, f)); err != nil {
				return err
			}
		}
		b, err := httpGet("http://" + listen + "/metrics")
		if err != nil {
			return err
		}
		if want := `evictguard_log_budget_bytes{mountpoint="` + nodefs + `",role="nodefs"}`; !strings.Contains(string(b), want) {
			return fmt.Errorf("no %s in /metrics", want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, p.LogTail(20))
	}
	// 64 MiB, threshold 6.4 MiB, ballast 8 MiB: 36 MiB more leaves < 16 MiB of headroom.
	fill(t, filepath.Join(nodefs, "buffer", "chunk"), 36*mib)
	err = harness.WaitFor(ctx, 30*time.Second, p, func() error {
		if _, err := os.Stat(ballast); err == nil {
			return fmt.Errorf("ballast still there")
		}
		b, err := httpGet("http://" + listen + "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `evictguard_reclaimed_bytes_total{action="reclaim-ballast"} 8.388608e+06`) {
			return fmt.Errorf("reclaimed bytes not counted yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("release: %v\n%s", err, p.LogTail(20))
	}
	if !strings.Contains(p.Log(), "action=reclaim-ballast result=applied bytes=8388608") {
		t.Errorf("release not logged with its bytes:\n%s", p.LogTail(20))
	}
}
