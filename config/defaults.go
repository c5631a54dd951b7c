package config

import (
	"strings"
	"time"

	"github.com/evictguard/evictguard/journal"
)

// Default values that are not policy.Policy's.
const (
	DefaultInterval        = time.Second
	DefaultWarnHorizon     = time.Hour
	DefaultWarnMargin      = 0.05
	DefaultStatfsTimeout   = 2 * time.Second
	DefaultConfigzInterval = 5 * time.Minute
	DefaultListen          = "127.0.0.1:9847"
	DefaultResend          = 30 * time.Second
	DefaultAlertFor        = time.Minute
	DefaultCriticalHorizon = 10 * time.Minute
	DefaultKubeletUnit     = "kubelet.service"
	DefaultHealthz         = "http://127.0.0.1:10248/healthz"
	DefaultExitBand        = 0.25
	DefaultBreachHold      = 30 * time.Second
	DefaultLogBudgetMargin = "5%"
	DefaultReclaimHorizon  = 30 * time.Minute
	DefaultGCKeepExited    = 5
	DefaultRotatedLogAge   = time.Hour
)

// DefaultRediscoverInterval is soon enough to follow a data root moved by hand before imagefs
// fills, and a discovery costs a few stats and one runtime API call.
const DefaultRediscoverInterval = time.Minute

// Default returns the complete default configuration (defaults applied).
func Default() *Configuration {
	c := &Configuration{APIVersion: APIVersion, Kind: Kind}
	c.ApplyDefaults(nil)
	return c
}

// ApplyDefaults fills in unset fields. set reports whether a key path (e.g. "alerts.for")
// was present in the file, so that an explicit zero survives where zero means something;
// nil means nothing was set.
func (c *Configuration) ApplyDefaults(set func(path string) bool) {
	if set == nil {
		set = func(string) bool { return false }
	}
	dur := func(d *Duration, path string, v time.Duration) {
		if d.Duration == 0 && !set(path) {
			d.Duration = v
		}
	}
	dur(&c.Monitor.Interval, "monitor.interval", DefaultInterval)
	dur(&c.Monitor.WarnHorizon, "monitor.warnHorizon", DefaultWarnHorizon)
	if c.Monitor.WarnMargin == 0 && !set("monitor.warnMargin") {
		c.Monitor.WarnMargin = DefaultWarnMargin
	}
	dur(&c.Monitor.StatfsTimeout, "monitor.statfsTimeout", DefaultStatfsTimeout)
	dur(&c.Monitor.RediscoverInterval, "monitor.rediscoverInterval", DefaultRediscoverInterval)
	dur(&c.Monitor.Configz.Interval, "monitor.configz.interval", DefaultConfigzInterval)
	if c.Monitor.Hysteresis.ExitBand == 0 && !set("monitor.hysteresis.exitBand") {
		c.Monitor.Hysteresis.ExitBand = DefaultExitBand
	}
	dur(&c.Monitor.Hysteresis.BreachHold, "monitor.hysteresis.breachHold", DefaultBreachHold)
	if c.Metrics.Listen == "" && !set("metrics.listen") {
		c.Metrics.Listen = DefaultListen
	}
	dur(&c.Alerts.Resend, "alerts.resend", DefaultResend)
	dur(&c.Alerts.For, "alerts.for", DefaultAlertFor)
	dur(&c.Alerts.CriticalHorizon, "alerts.criticalHorizon", DefaultCriticalHorizon)
	c.Policy.ApplyDefaults()
	if c.Actions.StateDir == "" {
		c.Actions.StateDir = journal.DefaultStateDir
	}
	if c.Actions.KubeletUnit == "" {
		c.Actions.KubeletUnit = DefaultKubeletUnit
	}
	if c.Actions.Healthz == "" {
		c.Actions.Healthz = DefaultHealthz
	}
	if c.Logs.Budget.Margin == "" {
		c.Logs.Budget.Margin = DefaultLogBudgetMargin
	}
	r := &c.Actions.Reclaim
	dur(&r.Horizon, "actions.reclaim.horizon", DefaultReclaimHorizon)
	if r.Ballast.Path == "" {
		r.Ballast.Path = strings.TrimSuffix(c.Actions.StateDir, "/") + "/ballast"
	}
	if r.GC.KeepExited == 0 && !set("actions.reclaim.gc.keepExited") {
		r.GC.KeepExited = DefaultGCKeepExited
	}
	dur(&r.RotatedLogs.MinAge, "actions.reclaim.rotatedLogs.minAge", DefaultRotatedLogAge)
}
