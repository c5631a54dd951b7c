package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/kubeletcfg"
)

// Config is what a Monitor watches and how.
type Config struct {
	// Layout is the result of DiscoverFilesystems.
	Layout *Layout
	// Thresholds are the kubelet's effective thresholds (kubeletcfg). containerfs.* are
	// replaced by the kubelet's own copies (ContainerFsThresholds) for KubeletVersion.
	Thresholds     []kubeletcfg.Threshold
	KubeletVersion string
	// HostRoot is where /proc and /sys/fs/cgroup of the node are read for the memory signals
	// and pid.available.
	HostRoot hostfs.Root
	// PodsCgroup is the kubelet's pods cgroup inside a cgroup hierarchy
	// (kubeletcfg.Cgroups.PodsCgroup, e.g. "/kubepods"), for allocatableMemory.available;
	// "" leaves that signal unknown.
	PodsCgroup string

	Eval    EvalConfig
	Predict PredictorConfig
	Logs    LogConfig
	// StatfsTimeout bounds each statfs (default 2s).
	StatfsTimeout time.Duration
	// LogTransitions logs every change of a signal's state (and the first state) at Info,
	// warnings and breaches at Warn.
	LogTransitions bool
	Logger         *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// sysSignals are the signals that are not filesystems: memory and PIDs.
var sysSignals = [...]string{kubeletcfg.SignalMemoryAvailable, kubeletcfg.SignalAllocatableMemoryAvailable, kubeletcfg.SignalPIDAvailable}

// fsGroup is one distinct filesystem (by st_dev): statfs runs once per group and a single
// predictor pair serves every role on it.
type fsGroup struct {
	hostPath string
	nodePath string
	dev      uint64
	usage    Usage
	err      error
	bytes    *Predictor
	inodes   *Predictor
}

// Monitor samples, evaluates and predicts, one Step at a time. Latest may be called
// concurrently with Step (e.g. by a Prometheus collector).
type Monitor struct {
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	sampler    *Sampler
	eval       *Evaluator
	thresholds []kubeletcfg.Threshold
	warnings   []string

	groups  []*fsGroup
	groupOf []int // index into groups per Layout.Filesystems entry
	logs    []*logScanner
	logOf   []int // index into logs per Layout.Filesystems entry, -1 if none
	nextLog int
	procBuf []byte // scratch for /proc reads; Step is serialised by stepMu
	pidMax  pidMaxCache
	memory  memoryObserver
	// Fill-rate history of the signals that are not filesystems, in sysSignals' order.
	sysPredict [len(sysSignals)]*Predictor

	stepMu sync.Mutex
	mu     sync.RWMutex
	latest *Snapshot
}

// New builds a Monitor; it does no I/O.
func New(cfg Config) (*Monitor, error) {
	if cfg.Layout == nil || cfg.Layout.ByRole(RoleNodeFs) == nil {
		return nil, errors.New("monitor: layout without nodefs")
	}
	m := &Monitor{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.sampler = NewSampler(cfg.StatfsTimeout)
	m.sampler.now = m.now
	m.eval = NewEvaluator(cfg.Eval)
	m.cfg.Logs = cfg.Logs.withDefaults()
	m.memory = memoryObserver{root: cfg.HostRoot, pods: cfg.PodsCgroup}
	if m.memory.root == "" {
		m.memory.root = "/"
	}
	for i := range m.sysPredict {
		m.sysPredict[i] = NewPredictor(cfg.Predict)
	}
	m.build(cfg.Layout, nil, nil)
	return m, nil
}

// build derives the thresholds (the kubelet's containerfs copies depend on the layout), the
// statfs groups (one per device) and the log scanners from layout. Predictors and log
// scanners of keep (a previous layout's, by device and host path) are carried over, so a
// re-discovery that finds the same filesystems keeps their fill-rate history.
func (m *Monitor) build(layout *Layout, keepGroups []*fsGroup, keepLogs []*logScanner) {
	m.cfg.Layout = layout
	m.thresholds, m.warnings = ContainerFsThresholds(m.cfg.Thresholds, m.cfg.KubeletVersion, layout.DedicatedImageFs, layout.SplitContainerFs)
	m.warnings = append(append([]string(nil), layout.Warnings...), m.warnings...)
	m.groups, m.groupOf, m.logs, m.logOf, m.nextLog = nil, nil, nil, nil, 0
	byDev := map[uint64]int{}
	for _, fs := range layout.Filesystems {
		gi, ok := byDev[fs.Dev]
		if !ok || fs.Dev == 0 {
			gi = len(m.groups)
			byDev[fs.Dev] = gi
			g := &fsGroup{hostPath: fs.HostPath, nodePath: fs.Path, dev: fs.Dev}
			for _, old := range keepGroups {
				if old.dev == fs.Dev && fs.Dev != 0 && old.hostPath == fs.HostPath {
					g.bytes, g.inodes = old.bytes, old.inodes
				}
			}
			if g.bytes == nil {
				g.bytes, g.inodes = NewPredictor(m.cfg.Predict), NewPredictor(m.cfg.Predict)
			}
			m.groups = append(m.groups, g)
		}
		m.groupOf = append(m.groupOf, gi)
		li := -1
		if fs.Role == RoleLogs {
			li = len(m.logs)
			var l *logScanner
			for i, old := range keepLogs {
				if old != nil && old.root == fs.HostPath && old.dev == fs.Dev {
					l, keepLogs[i] = old, nil
					break
				}
			}
			if l == nil {
				l = newLogScanner(fs.HostPath, fs.Dev)
			}
			m.logs = append(m.logs, l)
		}
		m.logOf = append(m.logOf, li)
	}
	for _, old := range keepLogs {
		if old != nil {
			old.close()
		}
	}
}

// SetLayout replaces the filesystem layout (a re-discovery after the runtime's data root
// moved: imagefs is now its own filesystem). The thresholds evaluated follow the new layout;
// signal states and the fill-rate history of filesystems found again are kept, a new
// filesystem's prediction starts afresh. It waits for a running Step.
func (m *Monitor) SetLayout(layout *Layout) error {
	if layout == nil || layout.ByRole(RoleNodeFs) == nil {
		return errors.New("monitor: layout without nodefs")
	}
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.build(layout, m.groups, m.logs)
	return nil
}

// Layout returns the filesystem layout being monitored.
func (m *Monitor) Layout() *Layout {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cfg.Layout
}

// Thresholds are the thresholds evaluated, including the kubelet's containerfs copies.
func (m *Monitor) Thresholds() []kubeletcfg.Threshold {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.thresholds
}

// Latest returns the last snapshot, or nil before the first Step. Callers must not modify it.
func (m *Monitor) Latest() *Snapshot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.latest
}

// Close releases directory handles held by the log walk.
func (m *Monitor) Close() error {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	for _, l := range m.logs {
		l.close()
	}
	return nil
}

// Step runs one cycle: statfs every distinct filesystem, advance the log walk, evaluate every
// threshold, predict. Errors observing a filesystem are reported in the snapshot (state
// unknown), not returned; the error is for a cancelled context.
func (m *Monitor) Step(ctx context.Context) (*Snapshot, error) {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.now()
	for _, g := range m.groups {
		u, err := m.sampler.Usage(ctx, g.hostPath)
		g.usage, g.err = u, err
		if err != nil {
			continue
		}
		g.bytes.Add(u.Time, float64(u.Available))
		g.inodes.Add(u.Time, float64(u.InodesFree))
	}
	m.stepLogs(now)

	snap := &Snapshot{Time: now, Warnings: m.warnings}
	for i, fs := range m.cfg.Layout.Filesystems {
		g := m.groups[m.groupOf[i]]
		st := FilesystemStatus{Filesystem: fs}
		if g.err != nil {
			st.Error = g.err.Error()
		} else {
			st.CapacityBytes, st.AvailableBytes = g.usage.Capacity, g.usage.Available
			st.Inodes, st.InodesFree = g.usage.Inodes, g.usage.InodesFree
			st.BytesFillRate, st.InodesFillRate = rateOrNil(g.bytes), rateOrNil(g.inodes)
		}
		if li := m.logOf[i]; li >= 0 {
			st.LogBytes, st.LogFiles, st.LogGrowthRate, st.LogScanInProgress = m.logs[li].stats()
		}
		snap.Filesystems = append(snap.Filesystems, st)
	}

	// Each non-filesystem signal is read once per Step, however many thresholds use it, and
	// its reading feeds that signal's predictor.
	var sys [len(sysSignals)]*Observation
	snap.Signals = m.eval.Evaluate(now, m.thresholds, func(signal string) (Observation, bool) {
		i := slices.Index(sysSignals[:], signal)
		if i < 0 {
			return m.observeFs(signal)
		}
		if sys[i] != nil {
			return *sys[i], true
		}
		var a, c int64
		var err error
		switch signal {
		case kubeletcfg.SignalMemoryAvailable:
			a, c, err = m.memory.nodeAvailable(&m.procBuf)
		case kubeletcfg.SignalAllocatableMemoryAvailable:
			a, c, err = m.memory.allocatableAvailable(&m.procBuf)
		case kubeletcfg.SignalPIDAvailable:
			a, c, err = pidAvailable(m.cfg.HostRoot, &m.procBuf, &m.pidMax, now)
		}
		o := &Observation{Available: a, Capacity: c, Err: err}
		if err == nil {
			m.sysPredict[i].Add(now, float64(a))
			o.Rate, o.RateOK = m.sysPredict[i].Rate()
		}
		sys[i] = o
		return *o, true
	})
	m.logTransitions(snap)

	m.mu.Lock()
	m.latest = snap
	m.mu.Unlock()
	return snap, nil
}

// observeFs maps nodefs.*, imagefs.* and containerfs.* to the filesystem with that role.
func (m *Monitor) observeFs(signal string) (Observation, bool) {
	prefix, quantity, ok := strings.Cut(signal, ".")
	if !ok {
		return Observation{}, false
	}
	idx := -1
	for i, fs := range m.cfg.Layout.Filesystems {
		if string(fs.Role) == prefix && fs.Role != RoleLogs {
			idx = i
			break
		}
	}
	if idx < 0 {
		return Observation{}, false
	}
	g := m.groups[m.groupOf[idx]]
	o := Observation{Filesystem: m.cfg.Layout.Filesystems[idx].Path, Err: g.err}
	if g.err != nil {
		return o, true
	}
	switch quantity {
	case "available":
		o.Available, o.Capacity = g.usage.Available, g.usage.Capacity
		o.Rate, o.RateOK = g.bytes.Rate()
	case "inodesFree":
		o.Available, o.Capacity = g.usage.InodesFree, g.usage.Inodes
		o.Rate, o.RateOK = g.inodes.Rate()
	default:
		return Observation{}, false
	}
	return o, true
}

// stepLogs advances the log walks within the per-step budget, starting with a different
// directory each time so that one huge tree cannot starve the others.
func (m *Monitor) stepLogs(now time.Time) {
	if len(m.logs) == 0 {
		return
	}
	budget := m.cfg.Logs.Budget
	for i := 0; i < len(m.logs) && budget > 0; i++ {
		l := m.logs[(m.nextLog+i)%len(m.logs)]
		budget -= l.step(now, budget, m.cfg.Logs.Refresh)
	}
	m.nextLog = (m.nextLog + 1) % len(m.logs)
}

func (m *Monitor) logTransitions(snap *Snapshot) {
	if !m.cfg.LogTransitions {
		return
	}
	prev := map[string]State{}
	if m.latest != nil {
		for _, s := range m.latest.Signals {
			prev[s.Signal+"/"+s.Kind] = s.State
		}
	}
	for _, s := range snap.Signals {
		from, had := prev[s.Signal+"/"+s.Kind]
		if had && from == s.State {
			continue
		}
		level := slog.LevelInfo
		if s.State == StateWarning || s.State == StateBreached || s.State == StateUnknown {
			level = slog.LevelWarn
		}
		attrs := []any{
			"signal", s.Signal, "kind", s.Kind, "from", string(from), "to", string(s.State),
			"threshold", s.Threshold, "thresholdQuantity", s.ThresholdQuantity,
			"observed", s.Observed, "headroom", s.Headroom,
		}
		if s.SecondsToThreshold != nil {
			attrs = append(attrs, "secondsToThreshold", fmt.Sprintf("%.0f", *s.SecondsToThreshold))
		}
		if s.Filesystem != "" {
			attrs = append(attrs, "filesystem", s.Filesystem)
		}
		if s.Error != "" {
			attrs = append(attrs, "err", s.Error)
		}
		m.log.Log(context.Background(), level, "signal state changed", attrs...)
	}
}

func rateOrNil(p *Predictor) *float64 {
	r, ok := p.Rate()
	if !ok {
		return nil
	}
	return &r
}
