package monitor

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace is the prefix of every metric evictguard exports (docs/metrics.md).
const Namespace = "evictguard"

// Snapshotter is what the collector reads at scrape time: *Monitor satisfies it.
type Snapshotter interface {
	Latest() *Snapshot
}

// BuildInfo labels evictguard_build_info.
type BuildInfo struct {
	Version, Revision, GoVersion string
}

// CollectorOptions are the values the collector exports beside the snapshot.
type CollectorOptions struct {
	Build BuildInfo
	// ConfigzChecked says whether the computed thresholds were compared with the kubelet's
	// /configz; ConfigzMismatches returns the differences found (nil when equal). A func so
	// that a later re-discovery is picked up.
	ConfigzChecked    func() bool
	ConfigzMismatches func() []string
}

// Collector exports the latest Snapshot as constant metrics, the node_exporter way: nothing
// is kept between scrapes, so signals and filesystems that disappear also disappear from
// /metrics. It never blocks on the monitor loop beyond the snapshot read lock.
type Collector struct {
	src  Snapshotter
	opts CollectorOptions

	buildInfo, lastEval                    *prometheus.Desc
	configzChecked, configzMismatch        *prometheus.Desc
	thrRatio                               *prometheus.Desc
	thr, avail, headroom                   map[string]*prometheus.Desc // by unit
	secondsTo, state, fillRate             *prometheus.Desc
	fsCap, fsAvail, fsInodes, fsInodesFree *prometheus.Desc
	fsError                                *prometheus.Desc
	signalInfo                             *prometheus.Desc
}

// Signal units: the suffix of the per-signal quantity metrics.
const (
	unitBytes  = "bytes"
	unitInodes = "inodes"
	unitPIDs   = "pids"
)

// States exported as evictguard_signal_state{state=…}, one series each (enum style).
var exportedStates = []State{StateOK, StateWarning, StateBreached, StateUnknown}

// NewCollector returns a collector over src (usually the *Monitor).
func NewCollector(src Snapshotter, opts CollectorOptions) *Collector {
	sig := []string{"signal", "kind", "role"}
	fs := []string{"role", "path", "mountpoint", "device"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	c := &Collector{
		src:  src,
		opts: opts,
		buildInfo: d("build_info", "A metric with a constant '1' value labelled by version, revision and goversion from which evictguard was built.",
			"version", "revision", "goversion"),
		lastEval:        d("last_evaluation_timestamp_seconds", "Unix time of the last completed evaluation of the eviction signals."),
		configzChecked:  d("thresholds_configz_checked", "1 if the computed eviction thresholds were compared with the kubelet's /configz, else 0."),
		configzMismatch: d("thresholds_configz_mismatch", "1 if the eviction thresholds computed from the kubelet's flags and files differ from its /configz, else 0."),
		thrRatio:        d("signal_threshold_ratio", "Eviction threshold as a fraction of capacity, for thresholds given in percent.", sig...),
		thr:             map[string]*prometheus.Desc{},
		avail:           map[string]*prometheus.Desc{},
		headroom:        map[string]*prometheus.Desc{},
		secondsTo: d("signal_seconds_to_threshold",
			"Predicted seconds until the signal reaches its eviction threshold at the current fill rate (0 when already crossed; absent when not being consumed).", sig...),
		state: d("signal_state", "Evaluated state of the signal: 1 for the current state (ok, warning, breached or unknown), 0 for the others.",
			append(sig, "state")...),
		signalInfo: d("signal_info", "Effective eviction threshold of a signal as the kubelet prints it, with the filesystem observed; value 1.",
			append(sig, "threshold", "filesystem")...),
		fsCap:        d("filesystem_capacity_bytes", "Size of the filesystem holding the directory with this role (f_blocks·f_frsize).", fs...),
		fsAvail:      d("filesystem_available_bytes", "Bytes available to unprivileged users on the filesystem (f_bavail·f_frsize), as the kubelet counts them.", fs...),
		fsInodes:     d("filesystem_inodes", "Total inodes of the filesystem (f_files).", fs...),
		fsInodesFree: d("filesystem_inodes_free", "Free inodes of the filesystem (f_ffree).", fs...),
		fsError:      d("filesystem_device_error", "1 if the last statfs of the filesystem failed or timed out, else 0.", fs...),
	}
	c.fillRate = d("signal_consumption_per_second", "Rate at which the observed quantity of the signal is being consumed, in its unit per second (negative when it grows).", sig...)
	for _, u := range []string{unitBytes, unitInodes, unitPIDs} {
		c.thr[u] = d("signal_threshold_"+u, "Effective eviction threshold of the signal as an absolute amount ("+u+").", sig...)
		c.avail[u] = d("signal_available_"+u, "Observed available amount of the signal ("+u+").", sig...)
		c.headroom[u] = d("signal_headroom_"+u, "Available amount above the eviction threshold ("+u+"); negative when crossed.", sig...)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.buildInfo, c.lastEval, c.configzChecked, c.configzMismatch, c.thrRatio,
		c.secondsTo, c.state, c.fillRate, c.signalInfo, c.fsCap, c.fsAvail, c.fsInodes, c.fsInodesFree, c.fsError} {
		ch <- d
	}
	for _, m := range []map[string]*prometheus.Desc{c.thr, c.avail, c.headroom} {
		for _, d := range m {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(c.buildInfo, 1, c.opts.Build.Version, c.opts.Build.Revision, c.opts.Build.GoVersion)
	if c.opts.ConfigzChecked != nil {
		checked := c.opts.ConfigzChecked()
		g(c.configzChecked, b2f(checked))
		mismatch := false
		if checked && c.opts.ConfigzMismatches != nil {
			mismatch = len(c.opts.ConfigzMismatches()) > 0
		}
		g(c.configzMismatch, b2f(mismatch))
	}
	snap := c.src.Latest()
	if snap == nil {
		return
	}
	g(c.lastEval, float64(snap.Time.UnixNano())/1e9)
	for _, fs := range snap.Filesystems {
		l := []string{string(fs.Role), fs.Path, fs.Mountpoint, fs.Device}
		g(c.fsError, b2f(fs.Error != ""), l...)
		if fs.Error != "" {
			continue
		}
		g(c.fsCap, float64(fs.CapacityBytes), l...)
		g(c.fsAvail, float64(fs.AvailableBytes), l...)
		g(c.fsInodes, float64(fs.Inodes), l...)
		g(c.fsInodesFree, float64(fs.InodesFree), l...)
	}
	for _, s := range snap.Signals {
		l := []string{s.Signal, s.Kind, SignalRole(s.Signal)}
		for _, st := range exportedStates {
			g(c.state, b2f(s.State == st), append(l, string(st))...)
		}
		g(c.signalInfo, 1, append(l, s.Threshold, s.Filesystem)...)
		if r, ok := thresholdRatio(s.Threshold); ok {
			g(c.thrRatio, r, l...)
		}
		if s.Error != "" {
			continue // nothing was observed: no quantities, no prediction
		}
		u := SignalUnit(s.Signal)
		g(c.thr[u], float64(s.ThresholdQuantity), l...)
		g(c.avail[u], float64(s.Observed), l...)
		g(c.headroom[u], float64(s.Headroom), l...)
		if s.FillRate != nil {
			g(c.fillRate, *s.FillRate, l...)
		}
		if s.SecondsToThreshold != nil {
			g(c.secondsTo, *s.SecondsToThreshold, l...)
		}
	}
}

// SignalRole is the filesystem role a signal observes ("nodefs" for nodefs.available), or ""
// for memory and PID signals.
func SignalRole(signal string) string {
	prefix, _, _ := strings.Cut(signal, ".")
	switch Role(prefix) {
	case RoleNodeFs, RoleImageFs, RoleContainerFs:
		return prefix
	}
	return ""
}

// SignalUnit is the unit of a signal's quantities: bytes, inodes or pids.
func SignalUnit(signal string) string {
	switch {
	case strings.HasSuffix(signal, ".inodesFree"):
		return unitInodes
	case strings.HasPrefix(signal, "pid."):
		return unitPIDs
	}
	return unitBytes
}

// thresholdRatio parses "10%" into 0.1.
func thresholdRatio(raw string) (float64, bool) {
	p, ok := strings.CutSuffix(strings.TrimSpace(raw), "%")
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(p, 64)
	if err != nil {
		return 0, false
	}
	return f / 100, true
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RemediationActions and RemediationResults are the label values of
// evictguard_remediation_attempts_total exported from zero, so that increase() and absent()
// work from the start: the journal's operation kinds the daemon's remediation pass reports,
// and its report results (journal.Kind*, journal.Result*; the daemon passes those lists, a
// test in cmd/evictguard checks they match).
var (
	RemediationActions = []string{"threshold-rewrite", "migrate-data-root"}
	RemediationResults = []string{"applied", "failed", "rolled-back", "blocked", "recovered"}
)

// RemediationMetrics counts remediation attempts by action and result. Safe for concurrent
// use; the zero value is not usable, use NewRemediationMetrics.
type RemediationMetrics struct {
	attempts *prometheus.CounterVec
	last     *prometheus.GaugeVec
	mu       sync.Mutex
	now      func() time.Time
}

// NewRemediationMetrics registers evictguard_remediation_attempts_total{action,result} and
// evictguard_remediation_last_attempt_timestamp_seconds{action,result} on reg, with a zero
// counter for every action in actions × result in results (RemediationActions and
// RemediationResults when nil).
func NewRemediationMetrics(reg prometheus.Registerer, actions, results []string) (*RemediationMetrics, error) {
	if actions == nil {
		actions = RemediationActions
	}
	if results == nil {
		results = RemediationResults
	}
	r := &RemediationMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "remediation_attempts_total",
			Help: "Remediation attempts by action and result: applied, failed, rolled-back, blocked (refused by policy) or recovered (finished after a restart).",
		}, []string{"action", "result"}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "remediation_last_attempt_timestamp_seconds",
			Help: "Unix time of the last remediation attempt by action and result.",
		}, []string{"action", "result"}),
		now: time.Now,
	}
	for _, a := range actions {
		for _, res := range results {
			r.attempts.WithLabelValues(a, res)
		}
	}
	if err := reg.Register(r.attempts); err != nil {
		return nil, err
	}
	if err := reg.Register(r.last); err != nil {
		return nil, err
	}
	return r, nil
}

// Observe counts one attempt of action with result.
func (r *RemediationMetrics) Observe(action, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts.WithLabelValues(action, result).Inc()
	r.last.WithLabelValues(action, result).Set(float64(r.now().UnixNano()) / 1e9)
}
