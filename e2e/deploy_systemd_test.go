package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/evictguard/evictguard/e2e/harness"
)

// userManagerDropped are the options of deploy/systemd/evictguard.service the sandboxed
// *user* manager cannot apply, with the reason; everything else in the unit — Type=notify,
// NotifyAccess, WatchdogSec, ExecReload and the rest of the hardening — runs as shipped.
var userManagerDropped = map[string]string{
	// A user manager has no multi-user.target; [Install] is only read by enable.
	"Install.WantedBy": "no multi-user.target in a user manager",
	// A user unit runs as the manager's user; User= is refused by user managers.
	"Service.User": "a user manager runs units as its own user only",
	// Exit 226/NAMESPACE under the user manager (Debian 12, systemd 252): it cannot make
	// /proc/sys, /sys (ProtectKernelTunables) or /proc/kmsg (ProtectKernelLogs) read-only or
	// inaccessible in the unit's mount namespace. All other mount-namespace options apply.
	"Service.ProtectKernelTunables": "user manager cannot remount /proc/sys and /sys read-only (226/NAMESPACE)",
	"Service.ProtectKernelLogs":     "user manager cannot hide /proc/kmsg and /dev/kmsg (226/NAMESPACE)",
	// The e2e host root is a temp dir: the shipped ExecStart and its paths are rewritten.
	"Service.ExecStart": "rewritten to the built binary and the test's config",
}

// TestDeploySystemdUnit installs deploy/systemd/evictguard.service in the sandboxed systemd
// (ExecStart rewritten to the built binary and a config in a temp dir; WatchdogSec
// shortened), starts it over D-Bus and checks: the start job finishes only after READY=1
// (Type=notify), the unit is active with evictguard's STATUS=, the watchdog keeps it alive
// past WatchdogSec, a reload (ExecReload: SIGHUP) of a changed config takes effect without a
// restart (StatusText, log, and the evaluation cadence on /metrics; a wider warning margin
// turns nodefs.available warning and a reclaim-ladder headroom floor makes the ladder
// escalate, on /metrics), and a broken config on reload is logged while the running
// configuration is kept.
func TestDeploySystemdUnit(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	ctx := context.Background()
	bin := evictguardBinary(t)
	sd := harness.StartSystemd(t)
	dir := harness.TempDir(t, "systemd-unit")
	kubeletRoot := filepath.Join(dir, "kubelet")
	if err := os.MkdirAll(kubeletRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cfgPath := filepath.Join(dir, "config.yaml")
	// A log-pipeline buffer directory the reload adds to monitor.logDirs.
	buffers := filepath.Join(dir, "fluentd-buffers")
	if err := os.Mkdir(buffers, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCfg := func(interval, warnMargin, logDirs, extra string) {
		t.Helper()
		c := fmt.Sprintf(`apiVersion: evictguard.dev/v1alpha1
kind: EvictguardConfiguration
monitor:
  interval: %s
  warnMargin: %s
  logDirs: [%s]
  kubeletVersion: "1.37"
  kubeletCmdline: "--root-dir=%s --eviction-hard=nodefs.available<10%%"
  runtime: containerd
metrics:
  listen: %s
%s`, interval, warnMargin, logDirs, kubeletRoot, listen, extra)
		if err := os.WriteFile(cfgPath, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The reclaim ladder may only escalate (which changes nothing on the node) and climbs
	// only when eviction is predicted within a second: never, on this disk.
	writeCfg("1s", "0.05", "", "actions:\n  reclaim:\n    allow: [escalate]\n    horizon: 1s\n")
	logPath := filepath.Join(dir, "evictguard.log")

	f, err := os.Open("../deploy/systemd/evictguard.service")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := unit.DeserializeOptions(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var kept []*unit.UnitOption
	for _, o := range opts {
		if why, drop := userManagerDropped[o.Section+"."+o.Name]; drop {
			t.Logf("unit option %s=%s not used in the sandbox: %s", o.Name, o.Value, why)
			continue
		}
		switch o.Section + "." + o.Name {
		case "Service.WatchdogSec":
			o = unit.NewUnitOption("Service", "WatchdogSec", "4s") // seen to fire within the test
		}
		kept = append(kept, o)
	}
	kept = append(kept,
		unit.NewUnitOption("Service", "ExecStart", fmt.Sprintf("%s run --config %s", bin, cfgPath)),
		unit.NewUnitOption("Service", "StandardOutput", "append:"+logPath),
		unit.NewUnitOption("Service", "StandardError", "append:"+logPath),
		// The test's paths are under /tmp, which PrivateTmp would hide.
		unit.NewUnitOption("Service", "PrivateTmp", "no"),
		unit.NewUnitOption("Service", "Restart", "no"),
	)
	b, err := readAllUnit(kept)
	if err != nil {
		t.Fatal(err)
	}
	sd.WriteUnit(t, "evictguard.service", b)
	t.Log("PrivateTmp=no in the sandbox: the test's binary, config and kubelet root live under /tmp")
	conn := sd.Conn(t)
	if err := conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}

	job := func(what string, f func(chan<- string) (int, error)) {
		t.Helper()
		ch := make(chan string, 1)
		start := time.Now()
		if _, err := f(ch); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case r := <-ch:
			if r != "done" {
				p, _ := conn.GetUnitTypePropertiesContext(ctx, "evictguard.service", "Service")
				t.Fatalf("%s job: %s (Result=%v ExecMainCode=%v ExecMainStatus=%v)\nlog:\n%s\nmanager log:\n%s", what, r,
					p["Result"], p["ExecMainCode"], p["ExecMainStatus"], fileTail(logPath), sd.Proc.LogTail(3000))
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s job did not finish\nlog:\n%s", what, fileTail(logPath))
		}
		t.Logf("%s job done in %v", what, time.Since(start).Round(time.Millisecond))
	}
	svc := func() map[string]any {
		t.Helper()
		p, err := conn.GetUnitTypePropertiesContext(ctx, "evictguard.service", "Service")
		if err != nil {
			t.Fatal(err)
		}
		u, err := conn.GetUnitPropertiesContext(ctx, "evictguard.service")
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range u {
			p[k] = v
		}
		return p
	}

	job("start", func(ch chan<- string) (int, error) {
		return conn.StartUnitContext(ctx, "evictguard.service", "replace", ch)
	})
	// Type=notify: the start job is done only once READY=1 came, i.e. after the first
	// evaluation, so the metrics endpoint already has one.
	p := svc()
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["Type"] != "notify" || p["NotifyAccess"] != "main" {
		t.Fatalf("after start: ActiveState=%v SubState=%v Type=%v NotifyAccess=%v", p["ActiveState"], p["SubState"], p["Type"], p["NotifyAccess"])
	}
	st, _ := p["StatusText"].(string)
	if !strings.Contains(st, "monitoring every 1s") || !strings.Contains(st, "generation 1") {
		t.Errorf("StatusText = %q", st)
	}
	if ts := lastEvaluation(t, listen); ts == 0 {
		t.Errorf("READY=1 before the first evaluation")
	}
	pid := p["MainPID"]
	t.Logf("active, StatusText %q, MainPID %v, WatchdogUSec %v", st, pid, p["WatchdogUSec"])

	// The watchdog: alive, same process, after more than WatchdogSec (4s).
	time.Sleep(6 * time.Second)
	if p := svc(); p["ActiveState"] != "active" || p["MainPID"] != pid || p["WatchdogUSec"] != uint64(4*time.Second/time.Microsecond) {
		t.Fatalf("after 6s with WatchdogSec=4s: ActiveState=%v MainPID=%v (was %v) WatchdogUSec=%v\nlog:\n%s",
			p["ActiveState"], p["MainPID"], pid, p["WatchdogUSec"], fileTail(logPath))
	}

	// Before the reload: nodefs.available is ok at a 5 % margin and the ladder is idle.
	if v, ok := scrapeMetric(t, listen, "evictguard_signal_state", `signal="nodefs.available"`, `kind="hard"`, `state="ok"`); !ok || v != 1 {
		t.Errorf("before the reload: nodefs.available state ok = %v (found %v); the test needs a disk with more than 15 %% free", v, ok)
	}
	if v, ok := scrapeMetric(t, listen, "evictguard_reclaim_actions_total", `action="reclaim-escalate"`); ok {
		t.Errorf("the ladder escalated before the reload: %v", v)
	}

	if _, ok := scrapeMetric(t, listen, "evictguard_filesystem_capacity_bytes", `role="logs"`, `path="`+buffers+`"`); ok {
		t.Errorf("the buffer directory is monitored before the reload")
	}

	// Reload a changed config, live, in the same process: the interval becomes 3s, the
	// warning margin covers the whole disk (the evaluator), the reclaim ladder gets a
	// headroom floor no disk has (its policy), and a buffer directory is added to the log
	// directories (discovered again by the filesystem follower).
	writeCfg("3s", "0.95", buffers, "actions:\n  reclaim:\n    allow: [escalate]\n    horizon: 1s\n    lowHeadroom: 1Ei\n")
	job("reload", func(ch chan<- string) (int, error) {
		return conn.ReloadUnitContext(ctx, "evictguard.service", "replace", ch)
	})
	// ExecReload is a kill: with Type=notify (systemd 252, no notify-reload) the job can end
	// before the daemon has taken the signal, so the new StatusText may take a moment.
	if err := waitCondition(ctx, 10*time.Second, func() error {
		p = svc()
		st, _ = p["StatusText"].(string)
		if p["MainPID"] != pid || !strings.Contains(st, "monitoring every 3s") || !strings.Contains(st, "generation 2") {
			return fmt.Errorf("after reload: MainPID %v (was %v), StatusText %q", p["MainPID"], pid, st)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := waitCondition(ctx, 10*time.Second, func() error {
		l := readFile(logPath)
		if !strings.Contains(l, `msg="configuration reloaded"`) ||
			!strings.Contains(l, `applied="[actions.reclaim.lowHeadroom monitor.interval monitor.logDirs monitor.warnMargin]"`) {
			return fmt.Errorf("no reload applying interval, logDirs, warnMargin and the reclaim floor in the log")
		}
		return nil
	}); err != nil {
		t.Errorf("%v\nlog:\n%s", err, fileTail(logPath))
	}
	// The new margin and the new ladder policy take effect in the running process, on the
	// same signal state and history: nodefs.available turns warning on /metrics, and the
	// ladder, now in danger, escalates (counted and logged).
	if err := waitCondition(ctx, 30*time.Second, func() error {
		if v, _ := scrapeMetric(t, listen, "evictguard_signal_state", `signal="nodefs.available"`, `kind="hard"`, `state="warning"`); v != 1 {
			return fmt.Errorf("nodefs.available not warning after reloading warnMargin 0.95")
		}
		// Any result: escalation is applied or blocked depending on remediation being set up.
		if v, _ := scrapeMetric(t, listen, "evictguard_reclaim_actions_total", `action="reclaim-escalate"`); v < 1 {
			return fmt.Errorf("the ladder did not escalate after reloading lowHeadroom 1Ei")
		}
		l := readFile(logPath)
		if !strings.Contains(l, `msg="log budget and reclaim ladder reconfigured"`) || !strings.Contains(l, "lowHeadroom=1152921504606846976") {
			return fmt.Errorf("no reconfiguration of the ladder in the log")
		}
		if _, ok := scrapeMetric(t, listen, "evictguard_filesystem_capacity_bytes", `role="logs"`, `path="`+buffers+`"`); !ok {
			return fmt.Errorf("the buffer directory added to monitor.logDirs is not monitored")
		}
		if !strings.Contains(l, `msg="filesystems changed" reason="configuration reloaded"`) {
			return fmt.Errorf("no re-discovery for the reloaded log directories in the log")
		}
		return nil
	}); err != nil {
		t.Errorf("%v\nlog:\n%s", err, fileTail(logPath))
	}
	if p := svc(); p["MainPID"] != pid {
		t.Errorf("the reload restarted the process: MainPID %v, was %v", p["MainPID"], pid)
	}
	// On /metrics: the evaluation timestamp now advances in ~3s steps.
	gaps := evaluationGaps(t, listen, 10*time.Second)
	for _, g := range gaps {
		if g < 2500*time.Millisecond {
			t.Errorf("evaluations %v apart after reloading to 3s (all gaps %v)", g, gaps)
			break
		}
	}
	t.Logf("evaluation gaps after reload: %v", gaps)

	// A broken file on reload: logged, the running configuration kept, still active.
	writeCfg("1s", "0.05", "", "monitr:\n  interval: 1s\n")
	job("reload (invalid file)", func(ch chan<- string) (int, error) {
		return conn.ReloadUnitContext(ctx, "evictguard.service", "replace", ch)
	})
	p = svc()
	st, _ = p["StatusText"].(string)
	if p["ActiveState"] != "active" || p["MainPID"] != pid || !strings.Contains(st, "generation 2") || !strings.Contains(st, "every 3s") {
		t.Errorf("after an invalid reload: ActiveState=%v MainPID=%v StatusText=%q", p["ActiveState"], p["MainPID"], st)
	}
	if err := waitCondition(ctx, 10*time.Second, func() error {
		l := readFile(logPath)
		if !strings.Contains(l, "reload failed; keeping the running configuration") || !strings.Contains(l, cfgPath+`:12: unknown key \"monitr\"`) {
			return fmt.Errorf("no line-numbered reload error in the log")
		}
		return nil
	}); err != nil {
		t.Errorf("%v\nlog:\n%s", err, fileTail(logPath))
	}

	job("stop", func(ch chan<- string) (int, error) {
		return conn.StopUnitContext(ctx, "evictguard.service", "replace", ch)
	})
	if p := svc(); p["ActiveState"] != "inactive" {
		t.Errorf("after stop: %v (Result %v)", p["ActiveState"], p["Result"])
	}
}

// scrapeMetric returns the value of the first sample of name on /metrics whose labels
// include every one of labels (each `key="value"`).
func scrapeMetric(t *testing.T, listen, name string, labels ...string) (float64, bool) {
	t.Helper()
	b, code, err := httpGetCode("http://" + listen + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		ls, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(","+ls+",", ","+l+",") {
				match = false
				break
			}
		}
		if match {
			f, err := strconv.ParseFloat(val, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func readAllUnit(opts []*unit.UnitOption) (string, error) {
	var b bytes.Buffer
	if _, err := b.ReadFrom(unit.Serialize(opts)); err != nil {
		return "", err
	}
	return b.String(), nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func fileTail(p string) string {
	s := readFile(p)
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

func lastEvaluation(t *testing.T, listen string) float64 {
	t.Helper()
	b, code, err := httpGetCode("http://" + listen + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "evictguard_last_evaluation_timestamp_seconds "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// evaluationGaps polls /metrics for d and returns the gaps between distinct evaluation
// timestamps (the first change is not counted: polling starts mid-interval).
func evaluationGaps(t *testing.T, listen string, d time.Duration) []time.Duration {
	t.Helper()
	var stamps []float64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if v := lastEvaluation(t, listen); len(stamps) == 0 || v != stamps[len(stamps)-1] {
			stamps = append(stamps, v)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var gaps []time.Duration
	for i := 2; i < len(stamps); i++ {
		gaps = append(gaps, time.Duration((stamps[i]-stamps[i-1])*float64(time.Second)).Round(10*time.Millisecond))
	}
	return gaps
}
