package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestDetectionLatencyVsKubelet fills a single-disk node (kubelet root dir and containerd's
// root on one tmpfs) at a steady rate while a real kubelet and `evictguard run --interval 1s`
// watch it, up to 87.5 % of capacity used (between the imagefs and nodefs thresholds), and
// waits for the kubelet's NodeHasDiskPressure. evictguard must log the binding signal as
// breached no later than the kubelet, warn with a time to threshold well before, and agree
// with the kubelet on which signal binds: on a single disk that is imagefs.available<15%,
// while nodefs.available<10% is never met here (kubelet-eviction.md §0 item 7).
func TestDetectionLatencyVsKubelet(t *testing.T) {
	const (
		size        = 192 << 20
		startPct    = 45                     // percent of capacity used before the kubelet starts
		fillRate    = 2 << 20                // bytes per second
		stopPct     = 87.5                   // stop filling here: imagefs (15 %) met, nodefs (10 %) not
		writeLead   = 100 * time.Millisecond // write this long before evictguard's cycle
		warnLead    = 10 * time.Second       // the warning must come at least this much earlier
		kubeletWait = 90 * time.Second
	)
	fs := harness.TmpFS(t, size, 0)
	c := harness.StartContainerd(t, harness.ContainerdOptions{Root: filepath.Join(fs, "containerd")})
	filler := filepath.Join(fs, "filler")
	fill(t, filler, size*startPct/100)

	k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, RootDir: filepath.Join(fs, "kubelet")})
	dir := harness.TempDir(t, "evictguard-latency")
	// The kubelet's own argv, so that another kubelet on this machine cannot be picked up.
	eg := harness.Start(t, dir, "evictguard", nil, evictguardBinary(t), "run", "--interval", "1s", "--listen", "",
		"--kubelet-cmdline", strings.Join(k.Args[1:], " "), "--kubelet-version", strings.TrimPrefix(harness.K8sVersion(), "v"),
		"--cri-endpoint", c.Endpoint())
	// evictguard's first evaluation, with the layout it found.
	if err := harness.WaitFor(context.Background(), 30*time.Second, eg, func() error {
		if !strings.Contains(eg.Log(), `msg="signal state changed"`) {
			return fmt.Errorf("no evaluation logged yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	log := eg.Log()
	// The kubelet has bind-mounted its root dir onto itself by now: nodefs is still the tmpfs.
	for _, want := range []string{"dedicatedImageFs=false", `signal=imagefs.available kind=hard from="" to=ok`,
		fmt.Sprintf("role=nodefs path=%s mountpoint=%s ", k.RootDir, fs)} {
		if !strings.Contains(log, want) {
			t.Fatalf("evictguard log lacks %q:\n%s", want, log)
		}
	}

	// Fill at a steady rate until the kubelet records NodeHasDiskPressure: one chunk a second,
	// written just before evictguard's cycle (its ticker started with its first evaluation),
	// so that the write that crosses the threshold is sampled at once. Without that, the
	// kubelet's 10 s eviction loop would land between the crossing and our next 1 s sample
	// in about one run in twenty and make the comparison a race.
	first := stateChanges(t, log)[0].at
	f, err := os.OpenFile(filler, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, fillRate)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	next := first.Add(-writeLead)
	for !next.After(time.Now().Add(50 * time.Millisecond)) {
		next = next.Add(time.Second)
	}
	fillStart := next
	var pressureAt time.Time
	for pressureAt.IsZero() {
		if time.Since(fillStart) > kubeletWait {
			t.Fatalf("no NodeHasDiskPressure from the kubelet within %s of filling; kubelet log tail:\n%s", kubeletWait, k.Proc.LogTail(3000))
		}
		time.Sleep(time.Until(next))
		next = next.Add(time.Second)
		var st unix.Statfs_t
		if err := unix.Statfs(fs, &st); err != nil {
			t.Fatal(err)
		}
		if float64(st.Bavail) > (100-stopPct)/100*float64(st.Blocks) {
			if _, err := f.Write(chunk); err != nil {
				t.Fatalf("fill: %v", err)
			}
		}
		pressureAt = kubeletPressureTime(t, k.Proc.LogPath)
	}
	// Give evictguard's last interval time to be logged, then read both logs.
	time.Sleep(1500 * time.Millisecond)
	changes := stateChanges(t, eg.Log())
	t.Logf("filled at %d MiB/s from %.0f%% to %.1f%% used; kubelet NodeHasDiskPressure at %s (%.1fs after the fill started)",
		fillRate>>20, float64(startPct), stopPct, pressureAt.Format("15:04:05.000"), pressureAt.Sub(fillStart).Seconds())
	for _, c := range changes {
		if c.signal != "memory.available" && c.signal != "allocatableMemory.available" && c.signal != "pid.available" {
			t.Logf("evictguard %s %s/%s %s→%s secondsToThreshold=%s", c.at.Format("15:04:05.000"), c.signal, c.kind, c.from, c.to, c.secondsToThreshold)
		}
	}

	breached := firstChange(changes, func(c stateChange) bool { return c.to == "breached" })
	if breached == nil {
		t.Fatalf("evictguard logged no breached signal by the kubelet's NodeHasDiskPressure at %s", pressureAt.Format("15:04:05.000"))
	}
	if breached.signal != "imagefs.available" || breached.kind != "hard" {
		t.Errorf("first signal breached = %s/%s, want imagefs.available/hard (binds first on a single disk)", breached.signal, breached.kind)
	}
	if breached.at.After(pressureAt) {
		t.Errorf("breached logged at %s, after the kubelet's NodeHasDiskPressure at %s", breached.at.Format("15:04:05.000"), pressureAt.Format("15:04:05.000"))
	}
	if nodefs := firstChange(changes, func(c stateChange) bool {
		return (c.signal == "nodefs.available" || c.signal == "containerfs.available") && c.to == "breached"
	}); nodefs != nil {
		t.Errorf("%s breached at %s, but the disk never went below 10 %% available", nodefs.signal, nodefs.at.Format("15:04:05.000"))
	}
	for _, line := range strings.Split(k.Proc.Log(), "\n") {
		if strings.Contains(line, "ephemeral-storage") || strings.Contains(strings.ToLower(line), "thresholds have been met") {
			t.Logf("kubelet: %s", line)
			break
		}
	}
	warned := firstChange(changes, func(c stateChange) bool {
		return c.signal == "imagefs.available" && c.kind == "hard" && c.to == "warning" && c.secondsToThreshold != ""
	})
	switch {
	case warned == nil:
		t.Errorf("no warning with a time to threshold for imagefs.available before the breach")
	case pressureAt.Sub(warned.at) < warnLead:
		t.Errorf("warning at %s, only %s before NodeHasDiskPressure (want >= %s)", warned.at.Format("15:04:05.000"), pressureAt.Sub(warned.at), warnLead)
	default:
		secs, _ := strconv.ParseFloat(warned.secondsToThreshold, 64)
		t.Logf("warning %.1fs before the kubelet (predicted %.0fs to threshold), breached %.1fs before it",
			pressureAt.Sub(warned.at).Seconds(), secs, pressureAt.Sub(breached.at).Seconds())
	}
}

// kubeletPressureTime returns when the kubelet logged NodeHasDiskPressure, or zero.
func kubeletPressureTime(t testing.TB, logPath string) time.Time {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "Recording event message for node") && strings.Contains(line, `event="NodeHasDiskPressure"`) {
			return klogTime(t, line)
		}
	}
	return time.Time{}
}

// klogHeader is "Lmmdd hh:mm:ss.uuuuuu" (local time, no year).
var klogHeader = regexp.MustCompile(`^[IWEF](\d{4} \d{2}:\d{2}:\d{2}\.\d{6})`)

func klogTime(t testing.TB, line string) time.Time {
	t.Helper()
	m := klogHeader.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no klog header in %q", line)
	}
	now := time.Now()
	ts, err := time.ParseInLocation("2006 0102 15:04:05.000000", fmt.Sprintf("%d %s", now.Year(), m[1]), time.Local)
	if err != nil {
		t.Fatalf("klog time in %q: %v", line, err)
	}
	if ts.After(now.Add(24 * time.Hour)) { // logged last year (run across New Year)
		ts = ts.AddDate(-1, 0, 0)
	}
	return ts
}

type stateChange struct {
	at                                  time.Time
	signal, kind, from, to              string
	secondsToThreshold, observed, level string
}

var slogAttr = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// stateChanges parses evictguard's "signal state changed" lines (slog text).
func stateChanges(t testing.TB, log string) []stateChange {
	t.Helper()
	var out []stateChange
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="signal state changed"`) {
			continue
		}
		attrs := map[string]string{}
		for _, m := range slogAttr.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			attrs[m[1]] = v
		}
		at, err := time.Parse(time.RFC3339Nano, attrs["time"])
		if err != nil {
			t.Fatalf("time in %q: %v", line, err)
		}
		out = append(out, stateChange{at: at, signal: attrs["signal"], kind: attrs["kind"], from: attrs["from"], to: attrs["to"],
			secondsToThreshold: attrs["secondsToThreshold"], observed: attrs["observed"], level: attrs["level"]})
	}
	return out
}

func firstChange(cs []stateChange, f func(stateChange) bool) *stateChange {
	for i := range cs {
		if f(cs[i]) {
			return &cs[i]
		}
	}
	return nil
}
