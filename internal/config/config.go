// Package config is evictguard's configuration file: one versioned YAML schema
// (apiVersion evictguard.dev/v1alpha1, kind EvictguardConfiguration) for the monitor, the
// metrics endpoint, alerts, the API server, the log-pipeline budget, the remediation policy,
// the actions' state and the reclaim ladder.
//
// Loading is strict and in three steps, each of which reports the file and line of the
// offending key: decode (an unknown or duplicated key is an error), ApplyDefaults, Validate
// (field and cross-field rules, including remediate.Policy's own). Default returns the
// complete default configuration, which is what `evictguard config defaults` prints.
//
// The package lives under internal/ because the schema is a contract of the binary, not a
// Go API: users write YAML, and the Go types may change between v1alpha1 releases.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/reclaim"
)

// APIVersion and Kind identify the schema.
const (
	APIVersion = "evictguard.dev/v1alpha1"
	Kind       = "EvictguardConfiguration"
)

// Duration is a time.Duration written as "90s", "1h" (shared with remediate.Policy).
type Duration = policy.Duration

// Configuration is the whole file.
type Configuration struct {
	APIVersion string `json:"apiVersion" yaml:"apiVersion"`
	Kind       string `json:"kind" yaml:"kind"`

	Monitor    Monitor       `json:"monitor" yaml:"monitor"`
	Metrics    Metrics       `json:"metrics" yaml:"metrics"`
	Alerts     Alerts        `json:"alerts" yaml:"alerts"`
	Kubernetes Kubernetes    `json:"kubernetes" yaml:"kubernetes"`
	Logs       Logs          `json:"logs" yaml:"logs"`
	Policy     policy.Policy `json:"policy" yaml:"policy"`
	Actions    Actions       `json:"actions" yaml:"actions"`

	// present holds the key paths of the file it was loaded from, with their lines.
	present map[string]int
}

// Present reports whether the file this configuration was loaded from has the key path
// (e.g. "policy", "monitor.interval").
func (c *Configuration) Present(path string) bool {
	_, ok := c.present[path]
	return ok
}

// Monitor is discovery and evaluation (flags of `status` and `run`).
type Monitor struct {
	// Interval between two evaluations (--interval, default 1s).
	Interval Duration `json:"interval" yaml:"interval"`
	// WarnHorizon: warn when a threshold is predicted within this time (--warn-horizon, 1h).
	WarnHorizon Duration `json:"warnHorizon" yaml:"warnHorizon"`
	// WarnMargin: warn when headroom is below this fraction of capacity (--warn-margin, 0.05).
	WarnMargin float64 `json:"warnMargin" yaml:"warnMargin"`
	// StatfsTimeout bounds each statfs (--statfs-timeout, 2s).
	StatfsTimeout Duration `json:"statfsTimeout" yaml:"statfsTimeout"`
	// RediscoverInterval: `run` discovers the filesystems again this often, so that a data
	// root moved outside the daemon (`evictguard migrate`, by hand) is followed without a
	// restart (--rediscover-interval, 1m; "0s": only after a migration in the journal).
	RediscoverInterval Duration `json:"rediscoverInterval" yaml:"rediscoverInterval"`
	// HistoryFile is the node path of a file keeping the fill-rate history across restarts
	// and upgrades (--history-file); "" keeps none.
	HistoryFile string `json:"historyFile,omitempty" yaml:"historyFile,omitempty"`
	// LogDirs are extra log-pipeline directories to account for, as node paths (--log-dir).
	LogDirs []string `json:"logDirs,omitempty" yaml:"logDirs,omitempty"`
	// Runtime overrides detection: docker, containerd or crio (--runtime).
	Runtime string `json:"runtime,omitempty" yaml:"runtime,omitempty"`
	// CRIEndpoint is the CRI socket asked for ImageFsInfo (--cri-endpoint).
	CRIEndpoint string `json:"criEndpoint,omitempty" yaml:"criEndpoint,omitempty"`
	// DockerSocket is dockerd's API socket (--docker-socket).
	DockerSocket string `json:"dockerSocket,omitempty" yaml:"dockerSocket,omitempty"`
	// KubeletCmdline and KubeletVersion replace discovery (--kubelet-cmdline, --kubelet-version).
	KubeletCmdline string `json:"kubeletCmdline,omitempty" yaml:"kubeletCmdline,omitempty"`
	KubeletVersion string `json:"kubeletVersion,omitempty" yaml:"kubeletVersion,omitempty"`
	// Configz compares the computed thresholds with the kubelet's /configz.
	Configz Configz `json:"configz" yaml:"configz"`
	// Hysteresis keeps states from flapping (file only; no flags).
	Hysteresis Hysteresis `json:"hysteresis" yaml:"hysteresis"`
}

// Hysteresis is how sticky the evaluator's states are (monitor.EvalConfig).
type Hysteresis struct {
	// ExitBand: a warning ends only once headroom exceeds warnMargin·(1+exitBand) of capacity
	// and the prediction warnHorizon·(1+exitBand) (default 0.25).
	ExitBand float64 `json:"exitBand" yaml:"exitBand"`
	// BreachHold keeps a signal breached until its threshold has been unmet this long
	// (default 30s; "0s": no hold beyond the kubelet's minimum reclaim).
	BreachHold Duration `json:"breachHold" yaml:"breachHold"`
}

// Configz is the /configz comparison (--configz, --configz-token-file, --configz-interval).
type Configz struct {
	URL       string   `json:"url,omitempty" yaml:"url,omitempty"`
	TokenFile string   `json:"tokenFile,omitempty" yaml:"tokenFile,omitempty"`
	Interval  Duration `json:"interval" yaml:"interval"`
}

// Metrics is the HTTP endpoint for /metrics, /healthz and /readyz.
type Metrics struct {
	// Listen address (--listen, default 127.0.0.1:9847); "" disables the server.
	Listen string `json:"listen" yaml:"listen"`
	// Auth protects the endpoint (--metrics-auth): "" or "none", or "kubernetes" — HTTPS, and
	// every path but /healthz and /readyz needs a bearer token whose user the API server
	// allows to get that path (TokenReview and SubjectAccessReview, as kube-rbac-proxy does).
	Auth string `json:"auth,omitempty" yaml:"auth,omitempty"`
	// TLS is the serving certificate; with auth "kubernetes" and no files, a self-signed one
	// is made at start.
	TLS MetricsTLS `json:"tls,omitempty" yaml:"tls,omitempty"`
}

// MetricsTLS is the metrics endpoint's certificate (--tls-cert-file, --tls-private-key-file).
type MetricsTLS struct {
	CertFile string `json:"certFile,omitempty" yaml:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty" yaml:"keyFile,omitempty"`
}

// Values of Metrics.Auth.
const (
	MetricsAuthNone       = "none"
	MetricsAuthKubernetes = "kubernetes"
)

// Alerts are the direct Alertmanager feed and the timing shared with Node Events.
type Alerts struct {
	// AlertmanagerURLs to post alerts to directly (--alertmanager.url, repeatable).
	AlertmanagerURLs []string `json:"alertmanagerURLs,omitempty" yaml:"alertmanagerURLs,omitempty"`
	// Resend re-posts active alerts this often (--alertmanager.resend, 30s).
	Resend Duration `json:"resend" yaml:"resend"`
	// For: a predicted eviction must hold this long before it is reported (--alert-for, 1m;
	// "0s" reports at once).
	For Duration `json:"for" yaml:"for"`
	// CriticalHorizon: EvictionImminent is critical within this time (--critical-horizon, 10m).
	CriticalHorizon Duration `json:"criticalHorizon" yaml:"criticalHorizon"`
}

// Kubernetes is the API server connection for Node Events, the condition and the lock.
type Kubernetes struct {
	// Kubeconfig (--kubeconfig); "" means in-cluster when available, else metrics only.
	Kubeconfig string `json:"kubeconfig,omitempty" yaml:"kubeconfig,omitempty"`
	// NodeName is this node (--node-name, default $NODE_NAME).
	NodeName string `json:"nodeName,omitempty" yaml:"nodeName,omitempty"`
}

// Logs is the log pipeline's disk budget: what it may still write before the nearest
// eviction threshold. The evictguard_log_budget_bytes metric is always exported.
type Logs struct {
	Budget LogBudget `json:"budget" yaml:"budget"`
}

// LogBudget says how the budget is computed and where it is published.
type LogBudget struct {
	// File: node path of the env file, with the fluent-bit and fluentd snippets next to it
	// (--log-budget-file; "": metric and Node annotation only).
	File string `json:"file,omitempty" yaml:"file,omitempty"`
	// Margin kept free above the nearest threshold: a quantity ("512Mi") or a percentage of
	// capacity ("5%") (--log-budget-margin, 5%).
	Margin string `json:"margin" yaml:"margin"`
}

// Actions is where remediation keeps its state and what it acts on.
type Actions struct {
	// StateDir: node path of the journal, backups and restart log (--state-dir).
	StateDir string `json:"stateDir" yaml:"stateDir"`
	// KubeletUnit is the kubelet's systemd unit (--unit, kubelet.service).
	KubeletUnit string `json:"kubeletUnit" yaml:"kubeletUnit"`
	// SystemdBus is the D-Bus address of the systemd manager (--bus-address; "" = system bus).
	SystemdBus string `json:"systemdBus,omitempty" yaml:"systemdBus,omitempty"`
	// Healthz is the kubelet's health endpoint checked after a restart (--healthz).
	Healthz string `json:"healthz" yaml:"healthz"`
	// Reclaim is the reclaim ladder: local steps that free nodefs before eviction, each
	// gated by Allow. It is independent of the policy section.
	Reclaim Reclaim `json:"reclaim" yaml:"reclaim"`
}

// Reclaim is the reclaim ladder (reclaim.Ladder): ballast, runtime GC, rotated logs,
// escalation, climbed in that order while eviction is near.
type Reclaim struct {
	// Allow lists the steps that may act: ballast, gc, logs, escalate (--reclaim; empty:
	// every step is reported as blocked, i.e. off).
	Allow []string `json:"allow,omitempty" yaml:"allow,omitempty"`
	// DryRun reports what the allowed steps would do and changes nothing (--reclaim-dry-run).
	DryRun bool `json:"dryRun" yaml:"dryRun"`
	// Horizon: climb while eviction is predicted sooner than this (--reclaim-horizon, 30m).
	Horizon Duration `json:"horizon" yaml:"horizon"`
	// LowHeadroom: also climb while nodefs headroom is below this quantity, e.g. "1Gi"
	// (--reclaim-low-headroom; "": prediction only).
	LowHeadroom string         `json:"lowHeadroom,omitempty" yaml:"lowHeadroom,omitempty"`
	Ballast     ReclaimBallast `json:"ballast" yaml:"ballast"`
	GC          ReclaimGC      `json:"gc" yaml:"gc"`
	RotatedLogs ReclaimLogs    `json:"rotatedLogs" yaml:"rotatedLogs"`
}

// ReclaimBallast is the preallocated reserve released first.
type ReclaimBallast struct {
	// Size of the ballast kept on nodefs, e.g. "1Gi" (--ballast-size; "": none).
	Size string `json:"size,omitempty" yaml:"size,omitempty"`
	// Path: node path of the ballast file, on nodefs (--ballast-path, <stateDir>/ballast).
	Path string `json:"path" yaml:"path"`
}

// ReclaimGC is the runtime garbage collection step.
type ReclaimGC struct {
	// KeepExited: keep this many of the newest exited containers (--gc-keep-exited, 5).
	KeepExited int `json:"keepExited" yaml:"keepExited"`
	// KeepImages are image references never removed, e.g. the pause image (--gc-keep-image).
	KeepImages []string `json:"keepImages,omitempty" yaml:"keepImages,omitempty"`
}

// ReclaimLogs is the rotated-log compression step.
type ReclaimLogs struct {
	// MinAge: compress rotated container logs older than this (--rotated-log-age, 1h).
	MinAge Duration `json:"minAge" yaml:"minAge"`
	// PosFiles are fluentd pos_files (node paths): only rotated logs they show fully read are
	// compressed (--log-pos-file).
	PosFiles []string `json:"posFiles,omitempty" yaml:"posFiles,omitempty"`
}

// ReclaimSteps maps the names used in actions.reclaim.allow (and --reclaim) to the ladder's
// steps.
var ReclaimSteps = map[string]string{
	"ballast": reclaim.StepBallast, "gc": reclaim.StepGC,
	"logs": reclaim.StepLogs, "escalate": reclaim.StepEscalate,
}

// Default values that are not remediate.Policy's.
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

// FieldError is a validation error of one key; Path is dotted ("monitor.interval",
// "policy.windows[0].start").
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Validate checks every field and the rules between fields. The error joins one
// *FieldError per problem.
func (c *Configuration) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.APIVersion != APIVersion {
		bad("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		bad("kind", "must be %q, not %q", Kind, c.Kind)
	}
	m := c.Monitor
	if m.Interval.Duration <= 0 {
		bad("monitor.interval", "must be positive, not %v", m.Interval.Duration)
	}
	if m.WarnHorizon.Duration <= 0 {
		bad("monitor.warnHorizon", "must be positive, not %v", m.WarnHorizon.Duration)
	}
	if m.WarnMargin < 0 || m.WarnMargin >= 1 {
		bad("monitor.warnMargin", "must be in [0, 1), not %v", m.WarnMargin)
	}
	if m.StatfsTimeout.Duration <= 0 {
		bad("monitor.statfsTimeout", "must be positive, not %v", m.StatfsTimeout.Duration)
	} else if m.StatfsTimeout.Duration > m.Interval.Duration && m.Interval.Duration > 0 && m.Interval.Duration < time.Second {
		// A statfs timeout far above a sub-second interval makes cycles overrun.
		bad("monitor.statfsTimeout", "%v is longer than monitor.interval %v", m.StatfsTimeout.Duration, m.Interval.Duration)
	}
	if m.RediscoverInterval.Duration < 0 {
		bad("monitor.rediscoverInterval", "must not be negative (0s: only after a migration in the journal), not %v", m.RediscoverInterval.Duration)
	}
	if m.HistoryFile != "" && !strings.HasPrefix(m.HistoryFile, "/") {
		bad("monitor.historyFile", "must be an absolute node path, not %q", m.HistoryFile)
	}
	for i, d := range m.LogDirs {
		if !strings.HasPrefix(d, "/") {
			bad(fmt.Sprintf("monitor.logDirs[%d]", i), "%q is not an absolute node path", d)
		}
	}
	switch m.Runtime {
	case "", "docker", "containerd", "crio":
	default:
		bad("monitor.runtime", "must be docker, containerd or crio, not %q", m.Runtime)
	}
	if m.KubeletVersion != "" && !kubeletVersionRE.MatchString(m.KubeletVersion) {
		bad("monitor.kubeletVersion", "%q is not X.Y or X.Y.Z", m.KubeletVersion)
	}
	if m.Configz.Interval.Duration <= 0 {
		bad("monitor.configz.interval", "must be positive")
	}
	if m.Configz.TokenFile != "" && m.Configz.URL == "" {
		bad("monitor.configz.tokenFile", "is set but monitor.configz.url is empty")
	}
	if h := m.Hysteresis; h.ExitBand <= 0 || h.ExitBand > 1 {
		bad("monitor.hysteresis.exitBand", "must be in (0, 1], not %v", h.ExitBand)
	}
	if m.Hysteresis.BreachHold.Duration < 0 {
		bad("monitor.hysteresis.breachHold", "must not be negative")
	}
	switch c.Metrics.Auth {
	case "", MetricsAuthNone, MetricsAuthKubernetes:
	default:
		bad("metrics.auth", "%q is not one of none, kubernetes", c.Metrics.Auth)
	}
	if (c.Metrics.TLS.CertFile == "") != (c.Metrics.TLS.KeyFile == "") {
		bad("metrics.tls", "certFile and keyFile go together")
	}
	if c.Metrics.Listen != "" {
		if _, port, err := splitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%v", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("metrics.listen", "port %q is not a number in 0…65535", port)
		}
	}
	for i, u := range c.Alerts.AlertmanagerURLs {
		if err := checkURL(u); err != nil {
			bad(fmt.Sprintf("alerts.alertmanagerURLs[%d]", i), "%v", err)
		}
	}
	if c.Alerts.Resend.Duration <= 0 {
		bad("alerts.resend", "must be positive")
	}
	if c.Alerts.For.Duration < 0 {
		bad("alerts.for", "must not be negative")
	}
	if c.Alerts.CriticalHorizon.Duration <= 0 {
		bad("alerts.criticalHorizon", "must be positive")
	} else if c.Alerts.CriticalHorizon.Duration > m.WarnHorizon.Duration && m.WarnHorizon.Duration > 0 {
		bad("alerts.criticalHorizon", "%v is longer than monitor.warnHorizon %v (critical must be the nearer horizon)",
			c.Alerts.CriticalHorizon.Duration, m.WarnHorizon.Duration)
	}
	for _, e := range c.Policy.Validate() {
		bad("policy."+e.Field, "%s", e.Detail)
	}
	if !c.Policy.Dry() {
		// Acting needs somewhere to journal, and the lock/pod blockers need the API server:
		// these are checked when the client is built; the state dir is checked here.
		if !strings.HasPrefix(c.Actions.StateDir, "/") {
			bad("actions.stateDir", "%q is not an absolute node path (needed when policy.dryRun is false)", c.Actions.StateDir)
		}
	}
	if c.Policy.Blockers.AlertmanagerURL != "" {
		if err := checkURL(c.Policy.Blockers.AlertmanagerURL); err != nil {
			bad("policy.blockers.alertmanagerURL", "%v", err)
		}
	}
	if c.Actions.KubeletUnit == "" || !strings.Contains(c.Actions.KubeletUnit, ".") {
		bad("actions.kubeletUnit", "%q is not a unit name such as kubelet.service", c.Actions.KubeletUnit)
	}
	if err := checkURL(c.Actions.Healthz); err != nil {
		bad("actions.healthz", "%v", err)
	}
	c.validateLogsAndReclaim(bad)
	return errors.Join(errs...)
}

// validateLogsAndReclaim checks logs.budget and actions.reclaim.
func (c *Configuration) validateLogsAndReclaim(bad func(path, format string, args ...any)) {
	absPath := func(path, p string) {
		if p != "" && !strings.HasPrefix(p, "/") {
			bad(path, "%q is not an absolute node path", p)
		}
	}
	quantity := func(path, s string) int64 {
		n, err := ParseQuantity(s)
		if err != nil {
			bad(path, "%v", err)
		}
		return n
	}
	absPath("logs.budget.file", c.Logs.Budget.File)
	if _, _, err := ParseMargin(c.Logs.Budget.Margin); err != nil {
		bad("logs.budget.margin", "%v", err)
	}
	r := c.Actions.Reclaim
	seen := map[string]bool{}
	for i, name := range r.Allow {
		path := fmt.Sprintf("actions.reclaim.allow[%d]", i)
		switch {
		case ReclaimSteps[name] == "":
			bad(path, "unknown step %q (want ballast, gc, logs or escalate)", name)
		case seen[name]:
			bad(path, "%q is listed twice", name)
		}
		seen[name] = true
	}
	if r.Horizon.Duration <= 0 {
		bad("actions.reclaim.horizon", "must be positive, not %v", r.Horizon.Duration)
	}
	quantity("actions.reclaim.lowHeadroom", r.LowHeadroom)
	size := quantity("actions.reclaim.ballast.size", r.Ballast.Size)
	absPath("actions.reclaim.ballast.path", r.Ballast.Path)
	if i := slices.Index(r.Allow, "ballast"); i >= 0 && size == 0 {
		bad(fmt.Sprintf("actions.reclaim.allow[%d]", i), "ballast is allowed but actions.reclaim.ballast.size is not set (there is no ballast to release)")
	}
	if r.GC.KeepExited < 0 {
		bad("actions.reclaim.gc.keepExited", "must not be negative, not %d", r.GC.KeepExited)
	}
	for i, ref := range r.GC.KeepImages {
		if strings.TrimSpace(ref) == "" {
			bad(fmt.Sprintf("actions.reclaim.gc.keepImages[%d]", i), "is empty")
		}
	}
	if r.RotatedLogs.MinAge.Duration < 0 {
		bad("actions.reclaim.rotatedLogs.minAge", "must not be negative")
	}
	for i, p := range r.RotatedLogs.PosFiles {
		if !strings.HasPrefix(p, "/") {
			bad(fmt.Sprintf("actions.reclaim.rotatedLogs.posFiles[%d]", i), "%q is not an absolute node path", p)
		}
	}
}

// ParseQuantity parses a byte quantity such as "512Mi" or "1G" ("" is 0).
func ParseQuantity(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity such as 512Mi: %w", s, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return q.Value(), nil
}

// ParseMargin parses the log-budget margin: "N%" of capacity (0 <= N < 100) or a quantity.
func ParseMargin(s string) (percent float64, bytes int64, err error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil || p < 0 || p >= 100 {
			return 0, 0, fmt.Errorf("%q is not a percentage in [0%%, 100%%)", s)
		}
		return p, 0, nil
	}
	n, err := ParseQuantity(s)
	if err != nil {
		return 0, 0, err
	}
	return 0, n, nil
}

var kubeletVersionRE = regexp.MustCompile(`^v?\d+\.\d+(\.\d+)?$`)

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", fmt.Errorf("%q is not host:port", s)
	}
	return s[:i], s[i+1:], nil
}

// Error is a problem at a position in a file; it prints as FILE:LINE: MESSAGE.
type Error struct {
	File string
	Line int // 0: unknown
	Path string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadFile reads, decodes, defaults and validates a configuration file.
func LoadFile(path string) (*Configuration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Load(path, b)
}

// Load decodes data (named name in errors) strictly, applies defaults and validates. Every
// error is an *Error (joined when there are several) naming name and, where known, the line.
func Load(name string, data []byte) (*Configuration, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; the configuration is a single document"}
	}
	lines := map[string]int{}
	index(&root, "", lines)
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: root.Line, Msg: "not a YAML mapping (expected apiVersion, kind, …)"}
	}

	c := &Configuration{}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(c); err != nil {
		return nil, decodeError(name, err, &root)
	}
	c.present = lines
	c.ApplyDefaults(c.Present)
	if err := c.Validate(); err != nil {
		return nil, Positioned(name, err, lines)
	}
	return c, nil
}

// Positioned turns the *FieldErrors in err into *Errors with the line of their key
// (or of the nearest enclosing key that is in the file).
func Positioned(name string, err error, lines map[string]int) error {
	var out []error
	for _, e := range unjoin(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			out = append(out, &Error{File: name, Msg: e.Error()})
			continue
		}
		line := 0
		for p := fe.Path; p != ""; p = parent(p) {
			if l, ok := lines[p]; ok {
				line = l
				break
			}
		}
		out = append(out, &Error{File: name, Line: line, Path: fe.Path, Msg: fe.Msg})
	}
	return errors.Join(out...)
}

func unjoin(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// parent strips the last element of a key path: "a.b[2]" → "a.b", "a.b" → "a".
func parent(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndex(p, "["); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i]
	}
	return ""
}

// index records the line of every key and sequence item under n by dotted path.
func index(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			index(c, path, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if _, dup := lines[p]; !dup {
				lines[p] = k.Line
			}
			index(v, p, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = c.Line
			index(c, p, lines)
		}
	}
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxError positions a YAML syntax error ("yaml: line 3: mapping values are not allowed").
func syntaxError(name string, err error) error {
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: n, Msg: m[2]}
	}
	if errors.Is(err, io.EOF) {
		return &Error{File: name, Msg: "empty file (expected apiVersion: " + APIVersion + ", kind: " + Kind + ")"}
	}
	return &Error{File: name, Msg: err.Error()}
}

var notFoundRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// decodeError turns yaml.v3's strict-decoding errors ("line 5: field foo not found in type
// config.Monitor") into one *Error per problem.
func decodeError(name string, err error, root *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		// A value's own UnmarshalText failed (a duration such as "fast"): yaml.v3 drops the
		// position, so point at the first scalar holding the quoted value.
		if m := quotedRE.FindStringSubmatch(err.Error()); m != nil {
			if line := findScalar(root, m[1]); line > 0 {
				return &Error{File: name, Line: line, Msg: err.Error()}
			}
		}
		return syntaxError(name, err)
	}
	var out []error
	for _, s := range te.Errors {
		m := lineRE.FindStringSubmatch(s)
		if m == nil {
			out = append(out, &Error{File: name, Msg: s})
			continue
		}
		n, _ := strconv.Atoi(m[1])
		msg := m[2]
		if f := notFoundRE.FindStringSubmatch(msg); f != nil {
			msg = fmt.Sprintf("unknown key %q (in %s)", f[1], schemaName(f[2]))
		}
		out = append(out, &Error{File: name, Line: n, Msg: msg})
	}
	return errors.Join(out...)
}

var quotedRE = regexp.MustCompile(`"([^"]*)"`)

func findScalar(n *yaml.Node, v string) int {
	if n.Kind == yaml.ScalarNode && n.Value == v {
		return n.Line
	}
	for _, c := range n.Content {
		if l := findScalar(c, v); l > 0 {
			return l
		}
	}
	return 0
}

// schemaName maps a Go type in a decoder message to the YAML section users know.
func schemaName(goType string) string {
	switch goType {
	case "config.Configuration":
		return "the top level"
	case "config.Monitor":
		return "monitor"
	case "config.Configz":
		return "monitor.configz"
	case "config.Metrics":
		return "metrics"
	case "config.Alerts":
		return "alerts"
	case "config.Kubernetes":
		return "kubernetes"
	case "config.Hysteresis":
		return "monitor.hysteresis"
	case "config.Logs":
		return "logs"
	case "config.LogBudget":
		return "logs.budget"
	case "config.Actions":
		return "actions"
	case "config.Reclaim":
		return "actions.reclaim"
	case "config.ReclaimBallast":
		return "actions.reclaim.ballast"
	case "config.ReclaimGC":
		return "actions.reclaim.gc"
	case "config.ReclaimLogs":
		return "actions.reclaim.rotatedLogs"
	case "policy.Policy":
		return "policy"
	case "policy.Amount":
		return "policy.headroom/floor"
	case "policy.Window":
		return "policy.windows[]"
	case "policy.Blockers":
		return "policy.blockers"
	case "policy.Lock":
		return "policy.lock"
	case "policy.MigrationPolicy":
		return "policy.migration"
	}
	return goType
}

// Marshal renders c as YAML, as `evictguard config defaults` prints it.
func Marshal(c *Configuration) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}

// LoadPolicy decodes a standalone remediation policy file (`--policy FILE`) as the
// configuration's policy section is decoded: strictly (unknown or duplicated keys, a second
// document, a value of the wrong type are errors), then defaults and validation. Errors are
// *Errors naming the file and, where known, the line. An empty file is the default policy.
func LoadPolicy(name string, data []byte) (*policy.Policy, error) {
	p := &policy.Policy{}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if !errors.Is(err, io.EOF) {
			return nil, syntaxError(name, err)
		}
	} else {
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; the policy is a single document"}
		}
		strict := yaml.NewDecoder(bytes.NewReader(data))
		strict.KnownFields(true)
		if err := strict.Decode(p); err != nil && !errors.Is(err, io.EOF) {
			return nil, decodeError(name, err, &root)
		}
	}
	lines := map[string]int{}
	index(&root, "", lines)
	p.ApplyDefaults()
	if errs := p.Validate(); len(errs) > 0 {
		fes := make([]error, 0, len(errs))
		for _, e := range errs {
			fes = append(fes, &FieldError{Path: e.Field, Msg: e.Detail})
		}
		return nil, Positioned(name, errors.Join(fes...), lines)
	}
	return p, nil
}
