package monitor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/kubeletcfg"
)

// EvalConfig tunes when a signal is a warning and how sticky states are.
type EvalConfig struct {
	// WarnHorizon: a signal predicted to reach its threshold sooner than this is a warning
	// (default 1h).
	WarnHorizon time.Duration
	// WarnMargin: a signal whose headroom is below this fraction of capacity is a warning
	// (default 0.05, i.e. within 5 % of capacity of the threshold).
	WarnMargin float64
	// ExitBand is the hysteresis for leaving warning: headroom must exceed
	// WarnMargin·(1+ExitBand) of capacity and the prediction WarnHorizon·(1+ExitBand)
	// (default 0.25).
	ExitBand float64
	// BreachHold keeps a signal breached until it has been unmet for this long (default 30s),
	// on top of the kubelet's own minimum-reclaim stickiness, so a disk hovering at the
	// threshold does not flap. The kubelet's DiskPressure condition is stickier still
	// (evictionPressureTransitionPeriod, default 5m).
	BreachHold time.Duration
}

func (c EvalConfig) withDefaults() EvalConfig {
	if c.WarnHorizon <= 0 {
		c.WarnHorizon = time.Hour
	}
	if c.WarnMargin <= 0 {
		c.WarnMargin = 0.05
	}
	if c.ExitBand <= 0 {
		c.ExitBand = 0.25
	}
	if c.BreachHold < 0 {
		c.BreachHold = 0
	} else if c.BreachHold == 0 {
		c.BreachHold = 30 * time.Second
	}
	return c
}

// Observation is what was measured for one signal this round.
type Observation struct {
	// Available is the free quantity (bytes, inodes, PIDs); Capacity its total.
	Available, Capacity int64
	// Rate is the consumption per second (positive = shrinking), valid when RateOK.
	Rate   float64
	RateOK bool
	// Filesystem is the node path observed, for disk signals.
	Filesystem string
	// Err is set when the quantity could not be observed.
	Err error
}

type signalState struct {
	state   State
	since   time.Time
	met     bool // the kubelet's met, for minimum-reclaim stickiness
	lastMet time.Time
}

// Evaluator turns observations into signal states. It keeps per-signal state for the
// hysteresis and is not safe for concurrent use.
type Evaluator struct {
	cfg   EvalConfig
	state map[string]*signalState
}

// NewEvaluator returns an evaluator with no history.
func NewEvaluator(cfg EvalConfig) *Evaluator {
	return &Evaluator{cfg: cfg.withDefaults(), state: map[string]*signalState{}}
}

// Evaluate evaluates every threshold against its observation. observe returns false for a
// signal evictguard does not observe; that signal is reported as unknown.
func (e *Evaluator) Evaluate(now time.Time, thresholds []kubeletcfg.Threshold, observe func(signal string) (Observation, bool)) []SignalStatus {
	out := make([]SignalStatus, 0, len(thresholds))
	seen := make(map[string]bool, len(thresholds))
	for _, th := range thresholds {
		key := th.Signal + "/" + string(th.Kind)
		seen[key] = true
		st := e.state[key]
		if st == nil {
			st = &signalState{state: StateOK, since: now}
			e.state[key] = st
		}
		o, ok := observe(th.Signal)
		if !ok {
			o.Err = fmt.Errorf("signal %s is not observed by evictguard", th.Signal)
		}
		out = append(out, e.evaluateOne(now, th, o, st))
	}
	for k := range e.state {
		if !seen[k] {
			delete(e.state, k)
		}
	}
	return out
}

func (e *Evaluator) evaluateOne(now time.Time, th kubeletcfg.Threshold, o Observation, st *signalState) SignalStatus {
	s := SignalStatus{
		Signal:         th.Signal,
		Kind:           string(th.Kind),
		Threshold:      th.Raw,
		MinimumReclaim: th.MinimumReclaim,
		Source:         th.Source,
		Filesystem:     o.Filesystem,
	}
	if th.Kind == kubeletcfg.Soft && th.GracePeriod > 0 {
		s.GracePeriod = th.GracePeriod.String()
	}
	setState := func(next State) {
		if next != st.state {
			st.state, st.since = next, now
		}
		s.State, s.Since = st.state, st.since
	}
	if o.Err != nil {
		s.Error = o.Err.Error()
		st.met = false
		setState(StateUnknown)
		return s
	}
	thr := th.Value.ThresholdBytes(o.Capacity)
	s.ThresholdQuantity, s.Observed, s.Capacity = thr, o.Available, o.Capacity
	s.Headroom = o.Available - thr
	if o.RateOK {
		r := o.Rate
		s.FillRate = &r
	}
	s.SecondsToThreshold = secondsTo(float64(o.Available), float64(thr), o.Rate, o.RateOK)

	// The kubelet: met when threshold > available; while a met threshold is being
	// reclaimed the target is threshold + minimumReclaim (thresholdsMet with enforceMinReclaim).
	target := thr
	if st.met {
		target += minReclaimQuantity(th.MinimumReclaim, o.Capacity)
	}
	st.met = target > o.Available
	s.Met = st.met
	if st.met {
		st.lastMet = now
		setState(StateBreached)
		return s
	}
	if st.state == StateBreached && now.Sub(st.lastMet) < e.cfg.BreachHold {
		setState(StateBreached)
		return s
	}
	cap := float64(o.Capacity)
	warnAt := func(band float64) bool {
		if float64(s.Headroom) < e.cfg.WarnMargin*(1+band)*cap {
			return true
		}
		return s.SecondsToThreshold != nil && *s.SecondsToThreshold < e.cfg.WarnHorizon.Seconds()*(1+band)
	}
	band := 0.0
	if st.state == StateWarning || st.state == StateBreached {
		band = e.cfg.ExitBand
	}
	if warnAt(band) {
		setState(StateWarning)
	} else {
		setState(StateOK)
	}
	return s
}

// minReclaimQuantity turns a minimum-reclaim value ("500Mi", "5%") into an absolute amount
// for the given capacity, as the kubelet does (percentages through float32). Invalid values
// count as 0: kubeletcfg reports them.
func minReclaimQuantity(raw string, capacity int64) int64 {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return 0
	}
	if p, ok := strings.CutSuffix(raw, "%"); ok {
		f, err := strconv.ParseFloat(p, 32)
		if err != nil {
			return 0
		}
		return kubeletcfg.Value{Percentage: float32(f) / 100}.ThresholdBytes(capacity)
	}
	q, err := resource.ParseQuantity(raw)
	if err != nil {
		return 0
	}
	return q.Value()
}
