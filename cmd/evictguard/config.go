package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/monitor"
)

func newConfigCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check or print the configuration file (" + config.APIVersion + " " + config.Kind + ")",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Decode FILE strictly, apply defaults and validate it; errors name the file and line (exit 2)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := config.LoadFile(args[0]); err != nil {
				return usageErr(err)
			}
			fmt.Fprintf(g.stdout, "%s: valid\n", args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "defaults",
		Short: "Print the complete default configuration (YAML, or JSON with --output json)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := config.Default()
			if g.output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(c)
			}
			b, err := config.Marshal(c)
			if err != nil {
				return problem(err)
			}
			_, err = g.stdout.Write(b)
			return err
		},
	})
	return cmd
}

// applyConfig makes the file's configuration c the one o runs with, keeping the value of
// every flag set on the command line: a set flag wins over the file, the file over the
// default. The flags are bound to the fields of o's configuration (settings.go), so nothing
// here lists the settings.
func applyConfig(o *runOptions, c *config.Configuration, fs *pflag.FlagSet) error {
	next, err := overlay(c, o.cfg, fs)
	if err != nil {
		return err
	}
	if next.Kubernetes.NodeName == "" {
		next.Kubernetes.NodeName = os.Getenv("NODE_NAME") // as --node-name's default
	}
	o.setConfig(next)
	// A policy section turns on remediation in the daemon (a dry run unless it says
	// dryRun: false), as --policy does; --policy on the command line wins.
	if f := fs.Lookup("policy"); c.Present("policy") && (f == nil || !f.Changed) {
		p := next.Policy
		o.remediation.Policy = &p
	}
	return nil
}

// daemonControl ties `evictguard run` to its --config file and to systemd: it loads the
// file (flags set on the command line win), reloads it on SIGHUP without touching the
// monitor's history or the alert state, and speaks sd_notify (READY=1 after the first
// evaluation, RELOADING=1/READY=1 around a reload, STATUS=, WATCHDOG=1 while the monitoring
// loop makes progress). Outside systemd ($NOTIFY_SOCKET unset) the notifications are no-ops.
type daemonControl struct {
	o   *runOptions
	fs  *pflag.FlagSet
	log *slog.Logger

	path    string
	cfg     *config.Configuration
	reloads int
	hup     chan os.Signal
	ready   bool
	// ladder: the reclaim ladder is built at start (reclaim steps or a ballast configured),
	// so its policy can be reloaded; remediating: remediation runs from the file's policy.
	ladder, remediating bool

	heartbeat  atomic.Int64 // UnixNano of the last finished monitoring cycle
	intervalNS atomic.Int64 // the monitoring interval, for the watchdog goroutine
	stopWD     chan struct{}
}

// newDaemonControl loads o.configFile (if any) into o and installs the SIGHUP handler.
func newDaemonControl(o *runOptions, fs *pflag.FlagSet, log *slog.Logger) (*daemonControl, error) {
	d := &daemonControl{o: o, fs: fs, log: log, path: o.configFile, hup: make(chan os.Signal, 1), stopWD: make(chan struct{})}
	if d.path != "" {
		c, err := config.LoadFile(d.path)
		if err != nil {
			return nil, usageErr(err)
		}
		d.cfg = c
		if err := applyConfig(o, c, fs); err != nil {
			return nil, usageErr(err)
		}
		policyFlag := fs.Lookup("policy")
		d.remediating = c.Present("policy") && (policyFlag == nil || !policyFlag.Changed)
	}
	size, err := config.ParseQuantity(o.logs.cfg.Actions.Reclaim.Ballast.Size)
	d.ladder = len(o.logs.cfg.Actions.Reclaim.Allow) > 0 || (err == nil && size > 0)
	// Where a reload hands its settings to the goroutines that own them.
	o.logs.live = &logsLive{}
	o.remediation.live = &policyLive{}
	// Always handled: the default action of SIGHUP would kill the daemon.
	signal.Notify(d.hup, syscall.SIGHUP)
	d.heartbeat.Store(time.Now().UnixNano())
	d.intervalNS.Store(int64(o.cfg.Monitor.Interval.Duration))
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		go d.watchdog(wd)
	}
	return d, nil
}

// addConfigFlag registers --config on run's flags.
func addConfigFlag(fs *pflag.FlagSet, o *runOptions) {
	fs.StringVar(&o.configFile, "config", "", "configuration file (YAML, "+config.APIVersion+" "+config.Kind+
		"; see `evictguard config defaults`); flags set on the command line win; SIGHUP re-reads it")
}

// Reload is the channel that delivers SIGHUP (nil, never ready, without a control).
func (d *daemonControl) Reload() <-chan os.Signal {
	if d == nil {
		return nil
	}
	return d.hup
}

// Stepped records a finished monitoring cycle (ok: it produced a snapshot); the first good
// one makes the service ready.
func (d *daemonControl) Stepped(ok bool) {
	if d == nil {
		return
	}
	d.heartbeat.Store(time.Now().UnixNano())
	if ok && !d.ready {
		d.ready = true
		d.notify("READY=1\nSTATUS=" + d.status())
	}
}

// Close stops the SIGHUP handler and the watchdog and tells systemd the daemon is stopping.
func (d *daemonControl) Close() {
	if d == nil {
		return
	}
	signal.Stop(d.hup)
	close(d.stopWD)
	d.notify("STOPPING=1")
}

func (d *daemonControl) status() string {
	s := fmt.Sprintf("monitoring every %v", d.o.cfg.Monitor.Interval.Duration)
	if d.path != "" {
		s += fmt.Sprintf("; config %s (generation %d)", d.path, d.reloads+1)
	}
	return s
}

func (d *daemonControl) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		d.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// watchdog pings systemd at half of WatchdogSec while the loop makes progress: a cycle
// stuck for longer than the watchdog (plus one interval) stops the pings and systemd
// restarts the service.
func (d *daemonControl) watchdog(wd time.Duration) {
	t := time.NewTicker(wd / 2)
	defer t.Stop()
	for {
		select {
		case <-d.stopWD:
			return
		case <-t.C:
			last := time.Unix(0, d.heartbeat.Load())
			if time.Since(last) < wd+d.interval() {
				d.notify("WATCHDOG=1")
			} else {
				d.log.Error("monitoring loop stalled; withholding the watchdog ping", "since", last)
			}
		}
	}
}

func (d *daemonControl) interval() time.Duration {
	return time.Duration(d.intervalNS.Load())
}

// reload re-reads the file. An invalid file is logged and the running configuration kept.
// Settings that can change without dropping state are applied (see isLive): the monitoring
// interval (t is reset), the period of filesystem re-discovery and the extra log
// directories (handed to the follower, which discovers again), the evaluator's warning
// horizon, margin and hysteresis (m), the
// alert feeds' horizons and `for:`, the log budget and the reclaim ladder's policy (handed to the logs worker), the remediation
// policy (read by the next remediation pass). The monitor's fill-rate history, every
// signal's state, the alert state, the ballast and the journal are kept as they are; other
// changed keys are logged as needing a restart.
func (d *daemonControl) reload(t *time.Ticker, m *monitor.Monitor) {
	if d == nil {
		return
	}
	if d.path == "" && !d.policyFromFlag() {
		d.log.Info("SIGHUP: no --config or --policy file; nothing to reload")
		return
	}
	d.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
	defer func() { d.notify("READY=1\nSTATUS=" + d.status()) }()
	d.reloadPolicyFile()
	if d.path == "" {
		return
	}
	c, err := config.LoadFile(d.path)
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "file", d.path, "err", err)
		return
	}
	live, restart := diffConfig(d.cfg, c, d.fs, d.isLive)
	next := *d.o
	if err := applyConfig(&next, c, d.fs); err != nil {
		d.log.Error("reload failed; keeping the running configuration", "file", d.path, "err", err)
		return
	}
	if err := d.apply(live, &next, t, m); err != nil {
		d.log.Error("reload failed; keeping the running configuration", "file", d.path, "err", err)
		return
	}
	d.cfg = c
	d.reloads++
	d.log.Info("configuration reloaded", "file", d.path, "generation", d.reloads+1, "applied", live,
		"interval", d.o.cfg.Monitor.Interval.Duration, "needRestart", restart)
	if len(restart) > 0 {
		d.log.Warn("changed settings need a restart to take effect (systemctl restart evictguard)", "keys", restart)
	}
}

// policyFromFlag: remediation runs from --policy FILE (not from the config file's policy
// section, and not turned off).
func (d *daemonControl) policyFromFlag() bool {
	r := &d.o.remediation
	return r.policyFile != "" && !d.remediating && r.Policy != nil
}

// reloadPolicyFile re-reads --policy FILE when remediation runs from it: a valid file that
// differs replaces the policy from the next remediation pass on; a bad one (FILE:LINE) is
// logged and the running policy kept. Remediation cannot be turned on or off by a reload:
// its loop starts with the daemon.
func (d *daemonControl) reloadPolicyFile() {
	if !d.policyFromFlag() {
		return
	}
	r := &d.o.remediation
	p, err := loadPolicy(r.policyFile)
	if err != nil {
		d.log.Error("reload of the remediation policy failed; keeping the running policy", "file", r.policyFile, "err", err)
		return
	}
	if reflect.DeepEqual(p, r.live.get(r.Policy)) {
		d.log.Info("remediation policy unchanged", "file", r.policyFile)
		return
	}
	r.live.set(p)
	d.log.Info("remediation policy reloaded; the next pass uses it", "file", r.policyFile, "dryRun", p.Dry())
}

// apply puts the live keys of next into effect. Nothing is changed when it fails.
func (d *daemonControl) apply(live []string, next *runOptions, t *time.Ticker, m *monitor.Monitor) error {
	changed := func(prefixes ...string) bool {
		return slices.ContainsFunc(live, func(k string) bool {
			return slices.ContainsFunc(prefixes, func(p string) bool { return k == p || strings.HasPrefix(k, p+".") })
		})
	}
	var logs *logsUpdate
	if changed("logs", "actions.reclaim") {
		u, err := newLogsUpdate(&next.logs)
		if err != nil {
			return err
		}
		logs = u
	}
	if next.cfg.Monitor.Interval.Duration != d.o.cfg.Monitor.Interval.Duration {
		d.o.cfg.Monitor.Interval.Duration = next.cfg.Monitor.Interval.Duration
		d.intervalNS.Store(int64(next.cfg.Monitor.Interval.Duration))
		t.Reset(next.cfg.Monitor.Interval.Duration)
	}
	if changed("monitor.warnHorizon", "monitor.warnMargin", "monitor.hysteresis") && m != nil {
		m.SetEval(next.evalConfig())
		d.log.Info("evaluation reconfigured; signal states and fill-rate history kept",
			"warnHorizon", next.cfg.Monitor.WarnHorizon.Duration, "warnMargin", next.cfg.Monitor.WarnMargin, "exitBand", next.cfg.Monitor.Hysteresis.ExitBand, "breachHold", next.cfg.Monitor.Hysteresis.BreachHold.Duration)
	}
	if changed("monitor.warnHorizon", "alerts.for", "alerts.criticalHorizon") {
		d.o.cfg.Monitor.WarnHorizon.Duration, d.o.cfg.Alerts.For.Duration, d.o.cfg.Alerts.CriticalHorizon.Duration = next.cfg.Monitor.WarnHorizon.Duration, next.cfg.Alerts.For.Duration, next.cfg.Alerts.CriticalHorizon.Duration
		p := d.o.alertPolicy()
		for _, f := range d.o.alertFeeds {
			f.SetPolicy(p) // the feeds' pending and firing alerts are kept
		}
		d.log.Info("alert policy reconfigured; pending and firing alerts kept", "warnHorizon", p.WarningHorizon,
			"criticalHorizon", p.CriticalHorizon, "for", next.cfg.Alerts.For.Duration, "feeds", len(d.o.alertFeeds))
	}
	if changed("monitor.logDirs") && d.o.follow.running != nil {
		d.o.cfg.Monitor.LogDirs = next.cfg.Monitor.LogDirs
		d.o.follow.running.setLogDirs(next.cfg.Monitor.LogDirs)
		d.log.Info("log directories changed; the filesystems are discovered again", "logDirs", next.cfg.Monitor.LogDirs)
	}
	if changed("monitor.rediscoverInterval") {
		if next.follow.cfg.Monitor.RediscoverInterval.Duration < 0 {
			return fmt.Errorf("monitor.rediscoverInterval must not be negative, not %v", next.follow.cfg.Monitor.RediscoverInterval.Duration)
		}
		d.o.follow.cfg.Monitor.RediscoverInterval.Duration = next.follow.cfg.Monitor.RediscoverInterval.Duration
		if f := d.o.follow.running; f != nil {
			f.setInterval(next.follow.cfg.Monitor.RediscoverInterval.Duration)
		}
		d.log.Info("filesystem re-discovery period changed", "rediscoverInterval", next.follow.cfg.Monitor.RediscoverInterval.Duration)
	}
	if logs != nil {
		d.o.logs.live.set(logs) // the logs worker applies it before its next snapshot
	}
	if changed("policy") && next.remediation.Policy != nil {
		d.o.remediation.live.set(next.remediation.Policy)
		d.log.Info("remediation policy replaced; the next pass uses it", "dryRun", next.remediation.Policy.Dry())
	}
	return nil
}

// isLive says whether a reload applies a changed key to the running daemon.
func (d *daemonControl) isLive(key string) bool {
	under := func(p string) bool { return key == p || strings.HasPrefix(key, p+".") }
	switch {
	case key == "monitor.interval", key == "monitor.warnHorizon", key == "monitor.warnMargin", under("monitor.hysteresis"),
		key == "monitor.rediscoverInterval":
		return true
	case key == "monitor.logDirs":
		// Handed to the filesystem follower, which discovers again with them.
		return d.o != nil && d.o.follow.running != nil
	case key == "alerts.for", key == "alerts.criticalHorizon":
		// The feeds' trackers take a new policy; URLs and the resend period are the feed's own
		// loop and need a restart.
		return true
	case under("logs.budget"):
		return true
	case under("actions.reclaim.ballast"):
		// The ballast is state on disk: a new size or path is taken at the next start.
		return false
	case under("actions.reclaim"):
		// Only a ladder built at start can be reconfigured.
		return d.ladder
	case under("policy"):
		// Only while remediation runs from this file's policy section.
		return d.remediating
	}
	return false
}

// diffConfig lists the keys whose values differ between old and new (as JSON leaves),
// split into those a reload applies (isLive) and those that need a restart. Keys whose flag
// was set on the command line are left out: the flag wins either way. A policy section
// added or removed is reported as "policy" (it turns remediation on or off).
func diffConfig(old, new *config.Configuration, fs *pflag.FlagSet, isLive func(string) bool) (live, restart []string) {
	a, b := flatten(old), flatten(new)
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	overridden := func(k string) bool {
		if fs == nil {
			return false
		}
		f := keyFlag(fs, k)
		if f == nil && strings.HasPrefix(k, "policy.") {
			f = fs.Lookup("policy")
		}
		return f != nil && f.Changed
	}
	for k := range keys {
		if a[k] == b[k] || overridden(k) {
			continue
		}
		if isLive(k) {
			live = append(live, k)
		} else {
			restart = append(restart, k)
		}
	}
	if old != nil && old.Present("policy") != new.Present("policy") && !overridden("policy.") {
		// Remediation turned on or off: its loop starts only with the daemon.
		notPolicy := func(k string) bool { return !strings.HasPrefix(k, "policy.") }
		live = slices.DeleteFunc(live, func(k string) bool { return !notPolicy(k) })
		restart = append(slices.DeleteFunc(restart, func(k string) bool { return !notPolicy(k) }), "policy")
	}
	slices.Sort(live)
	slices.Sort(restart)
	return live, restart
}

func flatten(c *config.Configuration) map[string]string {
	out := map[string]string{}
	if c == nil {
		return out
	}
	b, err := json.Marshal(c)
	if err != nil {
		return out
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return out
	}
	var walk func(string, any)
	walk = func(p string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				walk(strings.TrimPrefix(p+"."+k, "."), e)
			}
		default:
			// Lists compare whole: monitor.logDirs, alerts.alertmanagerURLs, policy.windows.
			eb, _ := json.Marshal(x)
			out[p] = string(eb)
		}
	}
	walk("", v)
	return out
}
