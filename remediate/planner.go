package remediate

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
)

// ThresholdPlan is the planner's answer: the complete old and new hard maps, the signals that
// change and why, and why it would not act.
type ThresholdPlan struct {
	Old, New map[string]string
	// Changes are the signals whose threshold is lowered (signal → new value).
	Changes map[string]string
	// Reasons explain each decision, one line per signal looked at.
	Reasons []string
	// Refusals are why the plan must not be carried out (empty: it may, if Changes is not).
	Refusals []string
}

// Act reports whether there is a change and nothing refuses it.
func (p *ThresholdPlan) Act() bool { return len(p.Changes) > 0 && len(p.Refusals) == 0 }

// PlanThresholds decides new hard thresholds from the kubelet's effective settings and the
// latest observations. A hard threshold is lowered when the headroom between what is available
// and the threshold is below the policy's target, and then to available − target (whole
// percent or MiB, rounded down), never below the floor and only for signals the policy allows.
// It refuses when a breached or short signal may not be changed, when the target would go
// below the floor, and when any disk signal would still be breached with the new values (on a
// single disk imagefs.available<15% binds before nodefs.available<10%: both must move).
func PlanThresholds(p *policy.Policy, eff *kubeletcfg.Effective, signals []monitor.SignalStatus) *ThresholdPlan {
	old := kubeletcfg.CompleteHard(eff, nil)
	tp := &ThresholdPlan{Old: old, New: maps.Clone(old), Changes: map[string]string{}}
	for _, s := range signals {
		if s.Kind != string(kubeletcfg.Hard) || s.Capacity <= 0 {
			continue
		}
		if _, ok := old[s.Signal]; !ok {
			continue
		}
		isBytes := strings.HasSuffix(s.Signal, ".available")
		target := amountOf(p.Headroom, s.Capacity, isBytes)
		floor := amountOf(p.Floor, s.Capacity, isBytes)
		headroom := s.Observed - s.ThresholdQuantity
		if headroom >= target {
			tp.Reasons = append(tp.Reasons, fmt.Sprintf("%s<%s: headroom %s ≥ target %s; unchanged", s.Signal, s.Threshold, human(headroom, isBytes), human(target, isBytes)))
			continue
		}
		short := fmt.Sprintf("%s<%s: headroom %s < target %s (observed %s of %s)", s.Signal, s.Threshold, human(headroom, isBytes), human(target, isBytes), human(s.Observed, isBytes), human(s.Capacity, isBytes))
		if !slices.Contains(p.Signals, s.Signal) {
			tp.Refusals = append(tp.Refusals, short+"; the policy does not allow changing "+s.Signal)
			continue
		}
		candidate := s.Observed - target
		if candidate < floor {
			tp.Refusals = append(tp.Refusals, fmt.Sprintf("%s; keeping the target would need a threshold of %s, below the floor %s", short, human(candidate, isBytes), human(floor, isBytes)))
			continue
		}
		val, q := newValue(s.Threshold, candidate, floor, s.Capacity, isBytes)
		if q >= s.ThresholdQuantity {
			tp.Reasons = append(tp.Reasons, short+"; lowering it would not help (already at or below "+val+")")
			continue
		}
		tp.Changes[s.Signal] = val
		tp.New[s.Signal] = val
		tp.Reasons = append(tp.Reasons, fmt.Sprintf("%s; lower to %s (headroom then %s, floor %s)", short, val, human(s.Observed-q, isBytes), human(floor, isBytes)))
	}
	// No threshold the node already breaches, changed or not, for the disk signals.
	if len(tp.Changes) > 0 {
		for _, s := range signals {
			if s.Kind != string(kubeletcfg.Hard) || s.Capacity <= 0 || strings.HasPrefix(s.Signal, "memory") || strings.HasPrefix(s.Signal, "pid") {
				continue
			}
			v, ok := tp.New[s.Signal]
			if !ok {
				continue
			}
			if q := quantityOf(v, s.Capacity); q >= s.Observed {
				tp.Refusals = append(tp.Refusals, fmt.Sprintf("%s<%s would still be breached (observed %s): the kubelet would stay under pressure", s.Signal, v, human(s.Observed, strings.HasSuffix(s.Signal, ".available"))))
			}
		}
	}
	if len(tp.Changes) == 0 && len(tp.Refusals) == 0 {
		tp.Reasons = append(tp.Reasons, "every hard disk threshold keeps its target headroom: nothing to do")
	}
	return tp
}

func amountOf(a policy.Amount, capacity int64, isBytes bool) int64 {
	v := int64(a.Percent / 100 * float64(capacity))
	if isBytes && a.Bytes != "" {
		if q, err := resource.ParseQuantity(a.Bytes); err == nil && q.Value() > v {
			v = q.Value()
		}
	}
	return v
}

// newValue renders the new threshold in the unit of the current one: a whole percentage
// (rounded down), or the floor's exact percentage when that rounding would cross it; a
// quantity rounded down to MiB (bytes) or a count (inodes).
func newValue(current string, candidate, floor, capacity int64, isBytes bool) (string, int64) {
	if strings.HasSuffix(current, "%") {
		pct := math.Floor(float64(candidate) * 100 / float64(capacity))
		floorPct := float64(floor) * 100 / float64(capacity)
		if pct < floorPct {
			pct = math.Ceil(floorPct*10) / 10
		}
		s := strconv.FormatFloat(pct, 'f', -1, 64) + "%"
		return s, quantityOf(s, capacity)
	}
	if isBytes {
		mi := candidate / (1 << 20)
		if mi*(1<<20) < floor {
			mi = (floor + (1 << 20) - 1) / (1 << 20)
		}
		return strconv.FormatInt(mi, 10) + "Mi", mi << 20
	}
	return strconv.FormatInt(max(candidate, floor), 10), max(candidate, floor)
}

// quantityOf is the kubelet's threshold amount for a raw value on a resource of capacity.
func quantityOf(raw string, capacity int64) int64 {
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

// human is v for a reason or refusal: a size (units.Bytes) or an inode count.
func human(v int64, isBytes bool) string {
	if !isBytes {
		return strconv.FormatInt(v, 10) + " inodes"
	}
	return units.Bytes(v)
}
