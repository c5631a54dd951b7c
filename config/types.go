// Package config is evictguard's configuration file: one versioned YAML schema
// (apiVersion evictguard.dev/v1alpha1, kind EvictguardConfiguration) for the monitor, the
// metrics endpoint, alerts, the API server, the log-pipeline budget, the remediation policy,
// the actions' state and the reclaim ladder.
//
// Loading is strict and in three steps, each of which reports the file and line of the
// offending key: decode (an unknown or duplicated key is an error), ApplyDefaults, Validate
// (field and cross-field rules, including policy.Policy's own). Default returns the complete
// default configuration, which is what `evictguard config defaults` prints.
//
// The files: types.go (the schema), defaults.go, validate.go, load.go (decoding with file and
// line). The schema is a contract of the binary, not a Go API: users write YAML, and the Go
// types may change between v1alpha1 releases. It reads only the file it is given.
package config

import (
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/reclaim"
)

// APIVersion and Kind identify the schema.
const (
	APIVersion = "evictguard.dev/v1alpha1"
	Kind       = "EvictguardConfiguration"
)

// Duration is a time.Duration written as "90s", "1h" (shared with policy.Policy).
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
