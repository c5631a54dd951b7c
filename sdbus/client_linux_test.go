package sdbus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/sdbus"
)

// sandbox starts a sandboxed systemd manager and a Client connected to it by address.
func sandbox(t *testing.T) (*harness.Systemd, *sdbus.Client) {
	t.Helper()
	sd := harness.StartSystemd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdbus.NewWithAddress(ctx, slog.New(slog.NewTextHandler(t.Output(), nil)), sd.BusAddress)
	if err != nil {
		t.Fatalf("NewWithAddress(%s): %v", sd.BusAddress, err)
	}
	t.Cleanup(c.Close)
	return sd, c
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFile waits until path exists with non-empty content and returns it, trimmed.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within 10s (err %v)", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// TestUnitDropInReloadRestart is the kubelet remediation sequence on a stand-in unit: read the
// unit, add a kubeadm-style drop-in (Environment= plus an ExecStart= reset), see that the
// manager wants a daemon-reload, reload, restart, and see the new environment in the process.
func TestUnitDropInReloadRestart(t *testing.T) {
	harness.RequireRoot(t)
	t.Parallel()
	sd, c := sandbox(t)
	ctx := testCtx(t, 60*time.Second)

	out := filepath.Join(sd.Dir, "out")
	envFile := filepath.Join(sd.Dir, "env")
	if err := os.WriteFile(envFile, []byte("BAR=from-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fragment := sd.WriteUnit(t, "stand-in.service", fmt.Sprintf(`[Unit]
Description=stand-in for the kubelet

[Service]
EnvironmentFile=-/nonexistent/evictguard.env
EnvironmentFile=%s
ExecStart=/bin/sh -c 'echo "$FOO $BAR $EVICTION_ARGS" > %s; exec sleep 1000'
Restart=always
`, envFile, out))
	base := sd.WriteDropIn(t, "stand-in.service", "00-base.conf", "[Service]\nEnvironment=FOO=one\n")

	u, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if u.LoadState != "loaded" || u.ActiveState != "inactive" {
		t.Errorf("before start: %s", u)
	}
	if u.FragmentPath != fragment {
		t.Errorf("FragmentPath = %q, want %q", u.FragmentPath, fragment)
	}
	if !slices.Equal(u.DropInPaths, []string{base}) {
		t.Errorf("DropInPaths = %q, want [%s]", u.DropInPaths, base)
	}
	if !slices.Equal(u.Environment, []string{"FOO=one"}) {
		t.Errorf("Environment = %q", u.Environment)
	}
	wantFiles := []sdbus.EnvironmentFile{{Path: "/nonexistent/evictguard.env", IgnoreErrors: true}, {Path: envFile}}
	if !slices.Equal(u.EnvironmentFiles, wantFiles) {
		t.Errorf("EnvironmentFiles = %+v, want %+v", u.EnvironmentFiles, wantFiles)
	}
	if len(u.ExecStart) != 1 || u.ExecStart[0].Path != "/bin/sh" || len(u.ExecStart[0].Argv) != 3 ||
		u.ExecStart[0].Argv[1] != "-c" || !strings.Contains(u.ExecStart[0].Argv[2], "$EVICTION_ARGS") {
		t.Errorf("ExecStart = %+v", u.ExecStart)
	}
	if u.Restart != "always" || u.NRestarts != 0 || u.MainPID != 0 || !u.InactiveExitTimestamp.IsZero() {
		t.Errorf("before start: Restart=%q NRestarts=%d MainPID=%d InactiveExitTimestamp=%v",
			u.Restart, u.NRestarts, u.MainPID, u.InactiveExitTimestamp)
	}

	before := time.Now()
	if err := c.Start(ctx, "stand-in.service", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := waitFile(t, out); got != "one from-file" {
		t.Errorf("first start: process saw %q, want %q", got, "one from-file")
	}
	first, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if first.ActiveState != "active" || first.SubState != "running" || first.MainPID == 0 {
		t.Fatalf("after start: %s", first)
	}
	// The shell writes the file and then execs sleep: MainPID is the same process, which
	// may not have exec'ed yet when the file appears.
	comm := procComm(first.MainPID)
	for deadline := time.Now().Add(5 * time.Second); comm == "sh" && time.Now().Before(deadline); comm = procComm(first.MainPID) {
		time.Sleep(20 * time.Millisecond)
	}
	if comm != "sleep" {
		t.Errorf("MainPID %d is %q, want sleep", first.MainPID, comm)
	}
	if ts := first.InactiveExitTimestamp; ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("InactiveExitTimestamp = %v, want between %v and now", ts, before)
	}

	// The 1.7-era kubeadm shape: an Environment= variable appended to a reset ExecStart=.
	// "%%" is how a literal "%" is written in a unit file. The drop-in directory exists
	// already (see TestNeedDaemonReloadNewDropInDir for why that matters).
	dropIn := sd.WriteDropIn(t, "stand-in.service", "10-evictguard.conf", fmt.Sprintf(`[Service]
Environment=FOO=two
Environment="EVICTION_ARGS=--eviction-hard=nodefs.available<5%%"
ExecStart=
ExecStart=/bin/sh -c 'echo "$FOO $BAR $EVICTION_ARGS" > %s; exec sleep 1000'
`, out))
	stale, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if !stale.NeedDaemonReload {
		t.Errorf("NeedDaemonReload = false after adding %s", dropIn)
	}
	if err := c.DaemonReload(ctx); err != nil {
		t.Fatal(err)
	}
	reloaded, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.NeedDaemonReload {
		t.Errorf("NeedDaemonReload still true after DaemonReload")
	}
	if !slices.Equal(reloaded.DropInPaths, []string{base, dropIn}) {
		t.Errorf("DropInPaths = %q, want [%s %s]", reloaded.DropInPaths, base, dropIn)
	}
	// The manager merges assignments: the later FOO= replaces the earlier one.
	wantEnv := []string{"FOO=two", "EVICTION_ARGS=--eviction-hard=nodefs.available<5%"}
	if !slices.Equal(reloaded.Environment, wantEnv) {
		t.Errorf("Environment = %q, want %q", reloaded.Environment, wantEnv)
	}
	if len(reloaded.ExecStart) != 1 {
		t.Errorf("ExecStart has %d entries after the ExecStart= reset, want 1: %+v", len(reloaded.ExecStart), reloaded.ExecStart)
	}
	if reloaded.MainPID != first.MainPID {
		t.Errorf("daemon-reload changed MainPID %d -> %d", first.MainPID, reloaded.MainPID)
	}

	if err := os.Remove(out); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, "stand-in.service", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := waitFile(t, out), "two from-file --eviction-hard=nodefs.available<5%"; got != want {
		t.Errorf("after restart: process saw %q, want %q", got, want)
	}
	second, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if second.MainPID == first.MainPID || second.ActiveState != "active" {
		t.Errorf("after restart: %s (first MainPID %d)", second, first.MainPID)
	}
	if !second.InactiveExitTimestamp.After(first.InactiveExitTimestamp) {
		t.Errorf("InactiveExitTimestamp did not advance: %v -> %v", first.InactiveExitTimestamp, second.InactiveExitTimestamp)
	}
	if second.NRestarts != 0 {
		t.Errorf("NRestarts = %d after a manual restart, want 0 (it counts automatic restarts)", second.NRestarts)
	}
	if err := syscall.Kill(first.MainPID, 0); err == nil && procComm(first.MainPID) == "sleep" {
		t.Errorf("old main process %d still alive after restart", first.MainPID)
	}

	// An automatic restart (Restart=always) counts in NRestarts.
	if err := syscall.Kill(second.MainPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, "stand-in.service", sdbus.HealthOptions{StableFor: 300 * time.Millisecond, Timeout: 15 * time.Second}); err != nil {
		t.Fatal(err)
	}
	third, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if third.NRestarts != 1 || third.MainPID == second.MainPID {
		t.Errorf("after the main process was killed: NRestarts=%d MainPID %d -> %d, want 1 automatic restart",
			third.NRestarts, second.MainPID, third.MainPID)
	}

	if err := c.Stop(ctx, "stand-in.service", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stopped, err := c.Unit(ctx, "stand-in.service")
	if err != nil {
		t.Fatal(err)
	}
	if stopped.ActiveState != "inactive" || stopped.MainPID != 0 {
		t.Errorf("after stop: %s", stopped)
	}
}

// TestNeedDaemonReload records when the manager notices changed unit files by itself.
// systemd 252 (Debian 12) caches which unit directories exist when it loads units, so a drop-in
// in a directory that did not exist then is not noticed: callers must daemon-reload after every
// write instead of relying on NeedDaemonReload.
func TestNeedDaemonReload(t *testing.T) {
	harness.RequireRoot(t)
	t.Parallel()
	sd, c := sandbox(t)
	ctx := testCtx(t, 30*time.Second)
	sd.WriteUnit(t, "a.service", "[Service]\nExecStart=/bin/sleep 1000\n")
	sd.WriteUnit(t, "b.service", "[Service]\nExecStart=/bin/sleep 1000\n")
	sd.WriteDropIn(t, "b.service", "00-base.conf", "[Service]\nEnvironment=A=1\n")
	// Running, so that the manager keeps them loaded: an inactive unit nobody references is
	// garbage-collected and simply loaded afresh (NeedDaemonReload false) on the next read.
	for _, u := range []string{"a.service", "b.service"} {
		if err := c.Start(ctx, u, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// mtimes are compared at microsecond resolution; make sure the edits are newer.
	time.Sleep(10 * time.Millisecond)
	tests := []struct {
		name   string
		unit   string
		change func()
		want   *bool // nil: only logged
	}{
		{name: "unit file edited", unit: "a.service", want: ptr(true),
			change: func() { sd.WriteUnit(t, "a.service", "[Service]\nExecStart=/bin/sleep 999\n") }},
		{name: "drop-in added to an existing directory", unit: "b.service", want: ptr(true),
			change: func() { sd.WriteDropIn(t, "b.service", "10-new.conf", "[Service]\nEnvironment=B=1\n") }},
		{name: "drop-in edited", unit: "b.service", want: ptr(true),
			change: func() { sd.WriteDropIn(t, "b.service", "00-base.conf", "[Service]\nEnvironment=A=2\n") }},
		{name: "drop-in in a new directory", unit: "a.service", want: nil,
			change: func() { sd.WriteDropIn(t, "a.service", "10-new.conf", "[Service]\nEnvironment=B=1\n") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.DaemonReload(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			tc.change()
			u, err := c.Unit(ctx, tc.unit)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				t.Logf("NeedDaemonReload = %v (systemd 252 says false: new drop-in directories are not noticed)", u.NeedDaemonReload)
			} else if u.NeedDaemonReload != *tc.want {
				t.Errorf("NeedDaemonReload = %v, want %v", u.NeedDaemonReload, *tc.want)
			}
			if err := c.DaemonReload(ctx); err != nil {
				t.Fatal(err)
			}
			if u, err = c.Unit(ctx, tc.unit); err != nil {
				t.Fatal(err)
			}
			if u.NeedDaemonReload {
				t.Errorf("NeedDaemonReload still true after DaemonReload")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestJobErrors(t *testing.T) {
	harness.RequireRoot(t)
	t.Parallel()
	sd, c := sandbox(t)
	sd.WriteUnit(t, "oneshot-false.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
	sd.WriteUnit(t, "exec-missing.service", "[Service]\nType=exec\nExecStart=/nonexistent/kubelet\n")
	sd.WriteUnit(t, "slow-start.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 30\nTimeoutStartSec=60\n")

	tests := []struct {
		name       string
		op         func(ctx context.Context, unit string, timeout time.Duration) error
		unit       string
		timeout    time.Duration
		wantResult string // JobError.Result; "" when another error is expected
		wantIs     error
		wantText   string
	}{
		{name: "oneshot exits 1", op: c.Restart, unit: "oneshot-false.service", timeout: 10 * time.Second, wantResult: "failed"},
		{name: "exec of a missing binary", op: c.Restart, unit: "exec-missing.service", timeout: 10 * time.Second, wantResult: "failed"},
		{name: "start of a missing binary", op: c.Start, unit: "exec-missing.service", timeout: 10 * time.Second, wantResult: "failed"},
		{name: "no such unit", op: c.Restart, unit: "no-such.service", timeout: 10 * time.Second, wantText: "no-such.service"},
		{name: "result not in time", op: c.Start, unit: "slow-start.service", timeout: 500 * time.Millisecond, wantIs: sdbus.ErrJobTimeout, wantText: "slow-start.service"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			err := tc.op(ctx, tc.unit, tc.timeout)
			if err == nil {
				t.Fatalf("%s: no error", tc.unit)
			}
			t.Logf("error: %v", err)
			var je *sdbus.JobError
			if tc.wantResult != "" {
				if !errors.As(err, &je) || je.Result != tc.wantResult || je.Unit != tc.unit {
					t.Fatalf("error %v: want JobError with result %q for %s", err, tc.wantResult, tc.unit)
				}
				if !strings.Contains(err.Error(), `"`+tc.wantResult+`"`) {
					t.Errorf("error %q does not name the job result", err)
				}
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v: want errors.Is %v", err, tc.wantIs)
			}
			if tc.wantText != "" && !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not contain %q", err, tc.wantText)
			}
		})
	}
	ctx := testCtx(t, 30*time.Second)
	if _, err := c.Unit(ctx, "no-such.service"); !errors.Is(err, sdbus.ErrUnitNotFound) {
		t.Errorf("Unit(no-such.service) = %v, want ErrUnitNotFound", err)
	}
	// The slow job is still queued; stop it so teardown does not wait for it.
	if err := c.Stop(ctx, "slow-start.service", 10*time.Second); err != nil {
		t.Errorf("stop slow-start.service: %v", err)
	}
}

func TestWaitHealthy(t *testing.T) {
	harness.RequireRoot(t)
	t.Parallel()
	sd, c := sandbox(t)
	sd.WriteUnit(t, "sleeper.service", "[Service]\nExecStart=/bin/sleep 1000\n")
	// Type=simple: the start job is "done" as soon as the process is forked; the failure shows
	// afterwards, which is the kubelet-with-a-bad-flag case.
	sd.WriteUnit(t, "simple-false.service", "[Service]\nExecStart=/bin/sh -c 'sleep 0.2; exit 3'\n")
	sd.WriteUnit(t, "never-started.service", "[Service]\nExecStart=/bin/sleep 1000\n")
	sd.WriteUnit(t, "crash-loop.service", `[Unit]
StartLimitIntervalSec=0

[Service]
ExecStart=/bin/sh -c 'sleep 0.2; exit 3'
Restart=always
RestartSec=100ms
`)
	ctx := testCtx(t, 120*time.Second)
	for _, u := range []string{"sleeper.service", "crash-loop.service"} {
		if err := c.Start(ctx, u, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Restart(ctx, "simple-false.service", 10*time.Second); err != nil {
		t.Fatalf("Restart of a Type=simple unit should report the job done, got %v", err)
	}

	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := int(status.Load())
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d\n", code)
	}))
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server not on 127.0.0.1: %s", srv.URL)
	}

	tests := []struct {
		name     string
		unit     string
		status   int // served by the health URL
		opts     sdbus.HealthOptions
		wantIs   error  // nil: healthy
		wantText string // in the error
		maxTime  time.Duration
	}{
		{name: "running, URL 200", unit: "sleeper.service", status: 200,
			opts: sdbus.HealthOptions{URL: srv.URL + "/healthz", StableFor: time.Second, Timeout: 10 * time.Second}, maxTime: 5 * time.Second},
		{name: "running, no URL", unit: "sleeper.service",
			opts: sdbus.HealthOptions{StableFor: 500 * time.Millisecond, Timeout: 10 * time.Second}, maxTime: 5 * time.Second},
		{name: "running, URL 500", unit: "sleeper.service", status: 500,
			opts:   sdbus.HealthOptions{URL: srv.URL + "/healthz", StableFor: 500 * time.Millisecond, Timeout: 2 * time.Second},
			wantIs: sdbus.ErrHealthTimeout, wantText: "500 Internal Server Error", maxTime: 5 * time.Second},
		{name: "URL unreachable", unit: "sleeper.service",
			opts:   sdbus.HealthOptions{URL: "http://127.0.0.1:1/healthz", StableFor: 500 * time.Millisecond, Timeout: 2 * time.Second},
			wantIs: sdbus.ErrHealthTimeout, wantText: "connection refused", maxTime: 5 * time.Second},
		{name: "started but exits", unit: "simple-false.service",
			opts:   sdbus.HealthOptions{StableFor: 2 * time.Second, Timeout: 10 * time.Second},
			wantIs: sdbus.ErrUnitFailed, wantText: "Result=exit-code", maxTime: 5 * time.Second},
		{name: "never started", unit: "never-started.service",
			opts:   sdbus.HealthOptions{Timeout: 1500 * time.Millisecond},
			wantIs: sdbus.ErrHealthTimeout, wantText: "unit is inactive/dead", maxTime: 4 * time.Second},
		{name: "crash loop", unit: "crash-loop.service",
			opts:   sdbus.HealthOptions{StableFor: 2 * time.Second, Timeout: 30 * time.Second},
			wantIs: sdbus.ErrRestartLoop, wantText: "Restart=always", maxTime: 15 * time.Second},
		{name: "crash loop, restarts tolerated", unit: "crash-loop.service",
			opts:   sdbus.HealthOptions{StableFor: time.Second, Timeout: 3 * time.Second, MaxRestarts: -1},
			wantIs: sdbus.ErrHealthTimeout, wantText: "automatic restarts during wait", maxTime: 6 * time.Second},
		{name: "missing unit", unit: "no-such.service",
			opts: sdbus.HealthOptions{Timeout: 5 * time.Second}, wantIs: sdbus.ErrUnitNotFound, maxTime: 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(max(tc.status, 200)))
			start := time.Now()
			err := c.WaitHealthy(testCtx(t, 60*time.Second), tc.unit, tc.opts)
			took := time.Since(start)
			t.Logf("took %s, err: %v", took.Round(time.Millisecond), err)
			if tc.wantIs == nil {
				if err != nil {
					t.Fatalf("WaitHealthy: %v", err)
				}
				if took < tc.opts.StableFor {
					t.Errorf("returned after %s, before StableFor %s", took, tc.opts.StableFor)
				}
			} else {
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("WaitHealthy = %v, want errors.Is %v", err, tc.wantIs)
				}
				var he *sdbus.HealthError
				if !errors.As(err, &he) || he.Unit != tc.unit {
					t.Errorf("error %T is not a *HealthError for %s", err, tc.unit)
				}
				if !strings.Contains(err.Error(), tc.wantText) || !strings.Contains(err.Error(), tc.unit) {
					t.Errorf("error %q does not mention %q and the unit", err, tc.wantText)
				}
			}
			if took > tc.maxTime {
				t.Errorf("took %s, want at most %s", took, tc.maxTime)
			}
		})
	}

	t.Run("URL recovers during the wait", func(t *testing.T) {
		status.Store(500)
		time.AfterFunc(time.Second, func() { status.Store(200) })
		start := time.Now()
		err := c.WaitHealthy(testCtx(t, 30*time.Second), "sleeper.service",
			sdbus.HealthOptions{URL: srv.URL, StableFor: 500 * time.Millisecond, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 1500*time.Millisecond {
			t.Errorf("healthy after %s; the URL only answered 200 after 1s and must then stay so for 500ms", took)
		}
	})

	t.Run("restart during the stable window", func(t *testing.T) {
		u, err := c.Unit(ctx, "sleeper.service")
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(700*time.Millisecond, func() {
			if err := c.Restart(context.Background(), "sleeper.service", 10*time.Second); err != nil {
				t.Errorf("restart: %v", err)
			}
		})
		start := time.Now()
		if err := c.WaitHealthy(testCtx(t, 30*time.Second), "sleeper.service",
			sdbus.HealthOptions{StableFor: 1500 * time.Millisecond, Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 2*time.Second {
			t.Errorf("healthy after %s; a restart at 0.7s must restart the 1.5s stability window", took)
		}
		after, err := c.Unit(ctx, "sleeper.service")
		if err != nil {
			t.Fatal(err)
		}
		if after.MainPID == u.MainPID {
			t.Errorf("MainPID unchanged (%d): the restart did not happen", u.MainPID)
		}
	})
}

// TestSandboxLeavesNothing runs a sandbox with a unit that forks and ignores SIGTERM, and checks
// after its cleanup that no process or mount of it is left.
func TestSandboxLeavesNothing(t *testing.T) {
	harness.RequireRoot(t)
	t.Parallel()
	var (
		dir  string
		pids []int
	)
	t.Run("sandbox", func(t *testing.T) {
		sd, c := sandbox(t)
		dir = sd.Dir
		sd.WriteUnit(t, "stubborn.service", `[Service]
ExecStart=/bin/sh -c 'trap "" TERM; sleep 1000 & sleep 1000 & wait'
TimeoutStopSec=1s
`)
		ctx := testCtx(t, 30*time.Second)
		if err := c.Start(ctx, "stubborn.service", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		var err error
		for deadline := time.Now().Add(5 * time.Second); len(pids) < 3 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if pids, err = sd.UnitPIDs("stubborn.service"); err != nil {
				t.Fatal(err)
			}
		}
		if len(pids) < 3 {
			t.Fatalf("unit processes = %v, want the shell and two sleeps", pids)
		}
	})
	if t.Failed() {
		return
	}
	for _, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
			t.Errorf("unit process %d survived teardown: %s", pid, b)
		}
	}
	l, err := harness.FindLeftovers()
	if err != nil {
		t.Fatal(err)
	}
	// Other packages' e2e tests may be running at the same time: only ours count here.
	for _, pid := range l.PIDs {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if strings.Contains(string(cmd), dir) || strings.HasPrefix(cwd, dir) || slices.Contains(pids, pid) {
			t.Errorf("leftover process %d: %q (cwd %s)", pid, cmd, cwd)
		}
	}
	for _, m := range l.Mounts {
		if strings.HasPrefix(m, dir) {
			t.Errorf("leftover mount %s", m)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir %s still exists (%v)", dir, err)
	}
}
