package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/monitor/feed"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/reclaim"
)

// syncBuffer is a log sink for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// reloadRig is `evictguard run` as runDaemon wires it, without the host: the config file,
// the daemon control, a monitor over a temp dir, and the logs worker's objects.
type reloadRig struct {
	dir, path string
	o         *runOptions
	d         *daemonControl
	m         *monitor.Monitor
	log       *syncBuffer
	ticker    *time.Ticker
	budget    reclaim.BudgetConfig
	pub       *reclaim.BudgetPublisher
	ladder    *reclaim.Ladder
}

const reloadHead = "apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\n"

func newReloadRig(t *testing.T, file string, args ...string) *reloadRig {
	t.Helper()
	r := &reloadRig{dir: t.TempDir(), o: &runOptions{}, log: &syncBuffer{}}
	r.path = filepath.Join(r.dir, "config.yaml")
	r.write(t, file)
	cmd := runCommand(&globalOptions{}, r.o)
	if err := cmd.Flags().Parse(append([]string{"--config", r.path}, args...)); err != nil {
		t.Fatal(err)
	}
	d, err := newDaemonControl(r.o, cmd.Flags(), slog.New(slog.NewTextHandler(r.log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	r.d = d
	r.m, err = monitor.New(monitor.Config{
		Layout:     &monitor.Layout{Filesystems: []monitor.Filesystem{{Role: monitor.RoleNodeFs, Path: "/var/lib/kubelet", HostPath: r.dir}}},
		Thresholds: []kubeletcfg.Threshold{{Signal: "nodefs.available", Kind: kubeletcfg.Hard, Raw: "10%", Value: kubeletcfg.Value{Percentage: 0.1}}},
		Eval:       r.o.evalConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.ticker = time.NewTicker(r.o.cfg.Monitor.Interval.Duration)
	t.Cleanup(r.ticker.Stop)
	// What logReclaimFlags.start builds from the options.
	u, err := newLogsUpdate(&r.o.logs)
	if err != nil {
		t.Fatal(err)
	}
	r.budget = reclaim.BudgetConfig{MarginPercent: u.marginPercent, MarginBytes: u.marginBytes}
	if r.pub, err = reclaim.NewBudgetPublisher(reclaim.BudgetPublisherConfig{}); err != nil {
		t.Fatal(err)
	}
	r.ladder = &reclaim.Ladder{
		Policy:  reclaim.Policy{Allow: u.allow, DryRun: u.dryRun, Horizon: u.horizon, LowHeadroom: u.lowHeadroom, RecreateCooldown: time.Minute},
		Ballast: &reclaim.Ballast{Path: filepath.Join(r.dir, "ballast"), Size: 1 << 20},
		GC:      &reclaim.DockerGC{KeepExited: u.keepExited, KeepImages: u.keepImages},
		Logs:    &reclaim.RotatedLogs{MinAge: u.rotatedAge},
	}
	return r
}

func (r *reloadRig) write(t *testing.T, body string) {
	t.Helper()
	if err := os.WriteFile(r.path, []byte(reloadHead+body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// worker is the logs worker's side: it takes a pending reload before its next snapshot.
func (r *reloadRig) worker() {
	r.o.logs.live.apply(hostfs.Root("/"), &r.budget, r.pub, r.ladder, nil)
}

const reloadBefore = `monitor:
  interval: 1s
logs:
  budget:
    margin: 5%
actions:
  reclaim:
    allow: [ballast, gc]
    horizon: 30m
    ballast: {size: 1Mi}
    gc: {keepExited: 3}
policy:
  dryRun: true
  maxRestartsPerDay: 2
`

const reloadAfter = `monitor:
  interval: 2s
  warnHorizon: 2h
  warnMargin: 0.2
  hysteresis: {exitBand: 0.5, breachHold: 0s}
metrics:
  listen: 127.0.0.1:1
alerts:
  for: 0s
  criticalHorizon: 20m
  resend: 1m
logs:
  budget:
    file: /var/lib/evictguard/log-budget.env
    margin: 1Gi
actions:
  reclaim:
    allow: [ballast, gc, logs]
    dryRun: true
    horizon: 1h
    lowHeadroom: 2Gi
    ballast: {size: 2Mi}
    gc: {keepExited: 1, keepImages: [pause:3.10]}
    rotatedLogs: {minAge: 10m}
policy:
  dryRun: false
  maxRestartsPerDay: 1
`

// TestReloadAppliesLive: a reload puts the live settings into the monitor, the logs worker
// and the remediation loop, keeps their state (ballast, signal states), leaves flags set on
// the command line alone, lists what needs a restart, and a broken file changes nothing.
func TestReloadAppliesLive(t *testing.T) {
	r := newReloadRig(t, reloadBefore, "--gc-keep-exited", "9")
	if !r.d.ladder || !r.d.remediating {
		t.Fatalf("ladder %v remediating %v, want both", r.d.ladder, r.d.remediating)
	}
	if _, err := r.m.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := r.m.Latest().Signals[0]
	ballast := r.ladder.Ballast
	// An alert feed's tracker, as startOutputs registers the Alertmanager and Node feeds.
	tracker := feed.NewTracker(r.o.alertPolicy(), "n1")
	r.o.alertFeeds = append(r.o.alertFeeds, tracker)

	r.write(t, reloadAfter)
	r.d.reload(r.ticker, r.m)
	r.worker()

	checks := []struct {
		name string
		ok   bool
		got  any
	}{
		{"interval", r.o.cfg.Monitor.Interval.Duration == 2*time.Second, r.o.cfg.Monitor.Interval.Duration},
		{"evaluation", func() bool {
			e := r.m.Eval()
			return e.WarnHorizon == 2*time.Hour && e.WarnMargin == 0.2 && e.ExitBand == 0.5 && e.BreachHold == 0
		}(), r.m.Eval()},
		{"reclaim policy", slices.Equal(r.ladder.Policy.Allow, []string{reclaim.StepBallast, reclaim.StepGC, reclaim.StepLogs}) &&
			r.ladder.Policy.DryRun && r.ladder.Policy.Horizon == time.Hour && r.ladder.Policy.LowHeadroom == 2<<30 &&
			r.ladder.Policy.RecreateCooldown == time.Minute, r.ladder.Policy},
		{"GC keep rules (--gc-keep-exited wins)", r.ladder.GC.(*reclaim.DockerGC).KeepExited == 9 &&
			slices.Equal(r.ladder.GC.(*reclaim.DockerGC).KeepImages, []string{"pause:3.10"}), r.ladder.GC},
		{"CRI GC keep rules", func() bool {
			cri := &reclaim.CRIGC{KeepPerContainer: 1}
			ladder := reclaim.Ladder{GC: cri}
			r.o.logs.live.set(&logsUpdate{keepExited: 4, keepImages: []string{"pause:3.10"}})
			r.o.logs.live.apply(hostfs.Root("/"), &reclaim.BudgetConfig{}, nil, &ladder, nil)
			return cri.KeepPerContainer == 4 && slices.Equal(cri.KeepImages, []string{"pause:3.10"})
		}(), nil},
		{"alert feeds", func() bool {
			p := tracker.Policy()
			return p.WarningHorizon == 2*time.Hour && p.CriticalHorizon == 20*time.Minute && p.For == 0
		}(), tracker.Policy()},
		{"rotated logs", r.ladder.Logs.MinAge == 10*time.Minute, r.ladder.Logs},
		{"ballast kept", r.ladder.Ballast == ballast && ballast.Size == 1<<20, r.ladder.Ballast},
		{"budget margin", r.budget.MarginBytes == 1<<30 && r.budget.MarginPercent == 0, r.budget},
		{"budget file", r.pub.File() == "/var/lib/evictguard/log-budget.env", r.pub.File()},
		{"policy", func() bool {
			p := r.o.remediation.live.get(nil)
			return p != nil && !p.Dry() && p.MaxRestartsPerDay == 1
		}(), r.o.remediation.live.get(nil)},
		{"generation", r.d.reloads == 1 && strings.Contains(r.d.status(), "generation 2"), r.d.status()},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if !c.ok {
				t.Errorf("not applied: %+v\nlog:\n%s", c.got, r.log)
			}
		})
	}
	s, err := r.m.Step(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after := s.Signals[0]; after.State == before.State && !after.Since.Equal(before.Since) {
		t.Errorf("signal state restarted by the reload: since %v, was %v", after.Since, before.Since)
	}
	log := r.log.String()
	for _, want := range []string{
		`msg="configuration reloaded"`, "needRestart=", "actions.reclaim.ballast.size", "metrics.listen", "alerts.resend",
		`msg="alert policy reconfigured; pending and firing alerts kept"`,
		"actions.reclaim.allow", "policy.maxRestartsPerDay", `msg="remediation policy replaced; the next pass uses it" dryRun=false`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "actions.reclaim.gc.keepExited") {
		t.Errorf("a key overridden by its flag is reported:\n%s", log)
	}

	// A broken file: logged, nothing handed over, the generation unchanged.
	r.write(t, "monitr: {}\n")
	r.d.reload(r.ticker, r.m)
	if r.o.logs.live.pending.Load() != nil || r.d.reloads != 1 || r.o.cfg.Monitor.Interval.Duration != 2*time.Second {
		t.Errorf("a broken file changed the running configuration: reloads %d interval %v", r.d.reloads, r.o.cfg.Monitor.Interval.Duration)
	}
	if !strings.Contains(r.log.String(), "reload failed; keeping the running configuration") {
		t.Errorf("no reload error in the log:\n%s", r.log)
	}
}

// TestReloadWithoutLadderOrPolicy: without a ladder built at start or a policy section,
// their keys are reported as needing a restart and nothing is handed over for them.
func TestReloadWithoutLadderOrPolicy(t *testing.T) {
	r := newReloadRig(t, "monitor:\n  interval: 1s\n")
	if r.d.ladder || r.d.remediating {
		t.Fatalf("ladder %v remediating %v, want neither", r.d.ladder, r.d.remediating)
	}
	r.write(t, "actions:\n  reclaim:\n    allow: [gc]\npolicy:\n  dryRun: false\n")
	r.d.reload(r.ticker, r.m)
	if p := r.o.remediation.live.get(nil); p != nil {
		t.Errorf("policy handed to a remediation loop that does not run: %+v", p)
	}
	if r.o.logs.live.pending.Load() != nil {
		t.Error("reclaim settings handed over without a ladder")
	}
	log := r.log.String()
	if !strings.Contains(log, "needRestart=\"[actions.reclaim.allow policy]\"") {
		t.Errorf("log:\n%s", log)
	}
}

// TestReloadConcurrent: reloads hand settings over while the logs worker, the remediation
// loop and the monitor run in their own goroutines (run with -race).
func TestReloadConcurrent(t *testing.T) {
	r := newReloadRig(t, reloadBefore)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r.worker()
			_ = r.ladder.Policy.Horizon
			_ = r.o.remediation.live.get(nil)
			time.Sleep(time.Millisecond)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := r.m.Step(t.Context()); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	for i := range 20 {
		if i%2 == 0 {
			r.write(t, reloadAfter)
		} else {
			r.write(t, reloadBefore)
		}
		r.d.reload(r.ticker, r.m)
	}
	close(stop)
	wg.Wait()
	r.worker()
	if r.d.reloads != 20 || r.ladder.Policy.Horizon != 30*time.Minute || r.m.Eval().WarnMargin != 0.05 {
		t.Errorf("after 20 reloads ending on the first file: reloads %d horizon %v margin %v", r.d.reloads, r.ladder.Policy.Horizon, r.m.Eval().WarnMargin)
	}
}

// TestReloadPolicyFile: with remediation from --policy FILE, a SIGHUP re-reads the file — with
// or without a --config file, and when the config file has a policy section the flag
// overrides — and a broken file keeps the running policy.
func TestReloadPolicyFile(t *testing.T) {
	tests := []struct {
		name   string
		config string // "" : no --config
	}{
		{name: "no config file"},
		{name: "config file without a policy", config: "monitor:\n  interval: 2s\n"},
		{name: "flag overrides the config's policy", config: "policy:\n  dryRun: true\n  maxRestartsPerDay: 5\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pol := filepath.Join(dir, "policy.yaml")
			writePolicy := func(body string) {
				t.Helper()
				if err := os.WriteFile(pol, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			writePolicy("dryRun: true\nmaxRestartsPerDay: 1\n")
			o, log := &runOptions{}, &syncBuffer{}
			cmd := runCommand(&globalOptions{}, o)
			args := []string{"--policy", pol}
			if tt.config != "" {
				cfg := filepath.Join(dir, "config.yaml")
				if err := os.WriteFile(cfg, []byte(reloadHead+tt.config), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", cfg)
			}
			if err := cmd.Flags().Parse(args); err != nil {
				t.Fatal(err)
			}
			d, err := newDaemonControl(o, cmd.Flags(), slog.New(slog.NewTextHandler(log, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(d.Close)
			if err := o.remediation.load(); err != nil {
				t.Fatal(err)
			}
			tick := time.NewTicker(time.Hour)
			defer tick.Stop()
			running := func() *policy.Policy { return o.remediation.live.get(o.remediation.Policy) }
			if p := running(); !p.Dry() || p.MaxRestartsPerDay != 1 {
				t.Fatalf("policy at start %+v, want the --policy file's", p)
			}

			writePolicy("dryRun: false\nmaxRestartsPerDay: 3\n")
			d.reload(tick, nil)
			if p := running(); p.Dry() || p.MaxRestartsPerDay != 3 {
				t.Errorf("after a reload %+v, want dryRun false and 3 restarts a day", p)
			}
			if !strings.Contains(log.String(), "remediation policy reloaded") {
				t.Errorf("reload not logged:\n%s", log.String())
			}

			writePolicy("dryRun: false\nmaxRestartsPerDay: [3\n")
			d.reload(tick, nil)
			if p := running(); p.Dry() || p.MaxRestartsPerDay != 3 {
				t.Errorf("after a broken file %+v, want the running policy kept", p)
			}
			if !strings.Contains(log.String(), "keeping the running policy") || !strings.Contains(log.String(), pol+":") {
				t.Errorf("broken file not reported with its name:\n%s", log.String())
			}
		})
	}
}
