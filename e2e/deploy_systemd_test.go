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
// restart (StatusText, log, and the evaluation cadence on /metrics), and a broken config on
// reload is logged while the running configuration is kept.
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
	writeCfg := func(interval string, extra string) {
		t.Helper()
		c := fmt.Sprintf(`apiVersion: evictguard.dev/v1alpha1
kind: EvictguardConfiguration
monitor:
  interval: %s
  kubeletVersion: "1.37"
  kubeletCmdline: "--root-dir=%s"
  runtime: containerd
metrics:
  listen: %s
%s`, interval, kubeletRoot, listen, extra)
		if err := os.WriteFile(cfgPath, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("1s", "")
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

	// Reload a changed config: the interval becomes 3s, live, in the same process.
	writeCfg("3s", "")
	job("reload", func(ch chan<- string) (int, error) {
		return conn.ReloadUnitContext(ctx, "evictguard.service", "replace", ch)
	})
	p = svc()
	st, _ = p["StatusText"].(string)
	if p["MainPID"] != pid || !strings.Contains(st, "monitoring every 3s") || !strings.Contains(st, "generation 2") {
		t.Errorf("after reload: MainPID %v (was %v), StatusText %q", p["MainPID"], pid, st)
	}
	if err := waitCondition(ctx, 10*time.Second, func() error {
		if !strings.Contains(readFile(logPath), `msg="configuration reloaded"`) {
			return fmt.Errorf("no reload in the log")
		}
		return nil
	}); err != nil {
		t.Error(err)
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
	writeCfg("1s", "monitr:\n  interval: 1s\n")
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
		if !strings.Contains(l, "reload failed; keeping the running configuration") || !strings.Contains(l, cfgPath+`:10: unknown key \"monitr\"`) {
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
