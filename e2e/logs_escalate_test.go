package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// escalatePolicy is a dry run whose target headroom (12%) is more than the node keeps once
// the disk is filled to 16% free: the planner has a threshold rewrite to offer.
const escalatePolicy = `dryRun: true
headroom: {percent: 12}
floor: {percent: 5}
minKubeletUptime: 1s
cooldown: 1s
maxRestartsPerDay: 100
stableFor: 3s
verifyTimeout: 60s
`

// TestLogsLadderEscalates runs `evictguard run` against kubelet.service on containerd
// (images on nodefs: one disk) with the reclaim ladder allowed every step and a remediation
// policy. When nodefs fills, the ladder releases the ballast, runs runtime GC through CRI
// (the unused image goes), finds no rotated logs, and — still short of headroom — escalates:
// the escalation triggers the daemon's remediation pass, which plans the threshold rewrite
// under the (dry-run) policy and reports it (log, metric), advising the data-root migration
// as imagefs shares nodefs. Nothing is written: the kubelet keeps its thresholds.
func TestLogsLadderEscalates(t *testing.T) {
	n := startNodeWith(t, layoutKubeadm17, escalatePolicy, nodeOptions{SingleDisk: true})

	// An image nothing uses, for runtime GC to find through CRI.
	d := harness.StartDocker(t, harness.DockerOptions{})
	d.CLI(t, "import", "--change", "LABEL role=junk", harness.BusyboxRootfsTar(t), "evictguard.local/junk:1")
	archive := filepath.Join(harness.TempDir(t, "images"), "junk.tar")
	d.CLI(t, "save", "-o", archive, "evictguard.local/junk:1")
	ctr := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ctr", append([]string{"--address", n.cri, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	ctr("images", "import", archive)

	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	ballast := filepath.Join(n.fs, "ballast")
	args := append([]string{"run", "--listen", listen, "--interval", "1s"}, n.args(
		"--ballast-size", "8Mi", "--ballast-path", ballast,
		"--reclaim", "ballast,gc,logs,escalate", "--reclaim-low-headroom", "64Mi")...)
	p := harness.Start(t, harness.TempDir(t, "evictguard-run"), "evictguard", nil, evictguardBinary(t), args...)
	err := harness.WaitFor(t.Context(), 60*time.Second, p, func() error {
		if !strings.Contains(p.Log(), "runtimeGC=\"cri "+n.cri+"\"") {
			return fmt.Errorf("reclaim ladder without CRI GC")
		}
		if !strings.Contains(p.Log(), "action=ballast-recreate result=applied") {
			return fmt.Errorf("no ballast yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, p.LogTail(3000))
	}

	// 16% free, under 64Mi of headroom above nodefs.available<10% even with the ballast back.
	n.fillTo(t, 0.16)
	err = harness.WaitFor(t.Context(), 120*time.Second, p, func() error {
		log := p.Log()
		for _, want := range []string{
			"action=reclaim-ballast result=applied",
			"action=reclaim-runtime-gc result=applied",
			"action=reclaim-escalate result=applied",
			"escalated: remediation pass queued (threshold rewrite under the remediation policy, a dry run)",
			"action=threshold-rewrite result=dry-run",
		} {
			if !strings.Contains(log, want) {
				return fmt.Errorf("no %q in the daemon log yet", want)
			}
		}
		b, err := httpGet("http://" + listen + "/metrics")
		if err != nil {
			return err
		}
		for _, want := range []string{
			`evictguard_reclaim_actions_total{action="reclaim-escalate",result="applied"} 1`,
			`evictguard_remediation_attempts_total{action="threshold-rewrite",result="dry-run"} 1`,
		} {
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("no %s in /metrics yet", want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, p.LogTail(6000))
	}
	log := p.Log()
	// The remediation report is the planned rewrite, with the migration advice.
	var report string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "action=threshold-rewrite result=dry-run") {
			report = line
		}
	}
	t.Logf("remediation report: %s", report)
	for _, want := range []string{"escalated by the reclaim ladder (nodefs.available headroom", "dry run: would lower", "nodefs.available<",
		"imagefs shares nodefs", "evictguard migrate"} {
		if !strings.Contains(report, want) {
			t.Errorf("remediation report lacks %q:\n%s", want, report)
		}
	}
	// GC took the unused image only.
	if strings.Contains(ctr("images", "ls", "-q"), "evictguard.local/junk:1") {
		t.Errorf("the unused image is still there")
	}
	if !strings.Contains(log, "evictguard.local/junk:1") {
		t.Errorf("GC did not report the image it removed:\n%s", tail(log, 4000))
	}
	// A dry run: the kubelet still enforces its defaults.
	n.assertConfigz(t, fiveDefaults)
	if err := p.Stop(10 * time.Second); err != nil {
		t.Logf("stop daemon: %v", err)
	}
}
