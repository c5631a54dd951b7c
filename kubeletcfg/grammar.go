package kubeletcfg

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// signalAllocatableNodeFsAvailable existed in 1.7–1.13 and was removed in 1.14; a newer kubelet
// refuses to start with it (k/k@v1.14.0:pkg/kubelet/eviction/api/types.go).
const signalAllocatableNodeFsAvailable = "allocatableNodeFs.available"

// signalOrder is the order thresholds are listed in: memory first, like the eviction manager
// sorts them, then the disk signals, then PIDs.
var signalOrder = []string{
	SignalMemoryAvailable, SignalAllocatableMemoryAvailable,
	SignalNodeFsAvailable, SignalNodeFsInodesFree,
	SignalImageFsAvailable, SignalImageFsInodesFree,
	SignalContainerFsAvailable, SignalContainerFsInodesFree,
	signalAllocatableNodeFsAvailable, SignalPIDAvailable,
}

// ValidSignal reports whether a kubelet of version v knows the signal. The set is the keys of
// signalToResource (k/k@v1.37.2:pkg/kubelet/eviction/helpers.go init, validSignal); pid.available
// arrived in 1.10, allocatableNodeFs.available left in 1.14, containerfs.* came with KEP-4191
// in 1.29.
func ValidSignal(v Version, signal string) bool {
	switch signal {
	case SignalMemoryAvailable, SignalAllocatableMemoryAvailable, SignalNodeFsAvailable,
		SignalNodeFsInodesFree, SignalImageFsAvailable, SignalImageFsInodesFree:
		return true
	case SignalPIDAvailable:
		return v.AtLeast(10)
	case signalAllocatableNodeFsAvailable:
		return !v.AtLeast(14)
	case SignalContainerFsAvailable, SignalContainerFsInodesFree:
		return v.AtLeast(29)
	}
	return false
}

// legacyGrammar reports whether v parses eviction settings the 1.7 way: one string per
// setting, no "0%"/"100%" disabling, percentages must be > 0. The map form and the disable
// rule arrived in 1.10 (k/k PR #59681).
func legacyGrammar(v Version) bool { return !v.AtLeast(10) }

// entry is one key of an eviction map with where it came from.
type entry struct {
	val string
	o   origin
	// def is set for values the kubelet filled in itself; the text says why
	// ("kubelet 1.37, no evictionHard in /var/lib/kubelet/config.yaml").
	def string
}

func (e entry) source() string {
	if e.def != "" {
		return "default (" + e.def + ")"
	}
	return e.o.String()
}

// emap is one eviction map; nil means "not set", which matters for defaulting.
type emap map[string]entry

func (m emap) plain() map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		out[k] = e.val
	}
	return out
}

func (m emap) clone() emap {
	if m == nil {
		return nil
	}
	out := make(emap, len(m))
	for k, e := range m {
		out[k] = e
	}
	return out
}

func fromPlain(m map[string]string, o origin) emap {
	if m == nil {
		return nil
	}
	out := make(emap, len(m))
	for k, v := range m {
		out[k] = entry{val: v, o: o}
	}
	return out
}

// sortedKeys iterates in signal order, unknown keys last and sorted, so that the first error
// reported is stable (the kubelet ranges over a Go map and reports a random one).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ia, ib := signalRank(a), signalRank(b)
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	return keys
}

func signalRank(s string) int {
	if i := slices.Index(signalOrder, s); i >= 0 {
		return i
	}
	return len(signalOrder)
}

// evictionMaps are the four eviction maps of a KubeletConfiguration.
type evictionMaps struct {
	hard, soft, grace, reclaim emap
}

// ParseThresholdConfig is the kubelet's ParseThresholdConfig
// (k/k@v1.37.2:pkg/kubelet/eviction/helpers.go) for a kubelet of version v: it validates the
// maps exactly as the kubelet does at startup and returns the thresholds it would enforce, in
// a stable order (hard before soft, memory first). "0%" and "100%" drop a signal (1.10+).
// With "pods" in enforceNodeAllocatable, each hard memory.available is copied to
// allocatableMemory.available. Sources are left empty.
func ParseThresholdConfig(v Version, enforceNodeAllocatable []string, hard, soft, softGracePeriod, minimumReclaim map[string]string) ([]Threshold, error) {
	o := origin{}
	return parseThresholds(v, evictionMaps{
		hard: fromPlain(hard, o), soft: fromPlain(soft, o),
		grace: fromPlain(softGracePeriod, o), reclaim: fromPlain(minimumReclaim, o),
	}, slices.Contains(enforceNodeAllocatable, "pods"))
}

func parseThresholds(v Version, m evictionMaps, allocatable bool) ([]Threshold, error) {
	hard, err := parseStatements(v, m.hard, Hard)
	if err != nil {
		return nil, err
	}
	soft, err := parseStatements(v, m.soft, Soft)
	if err != nil {
		return nil, err
	}
	grace, err := parseGracePeriods(v, m.grace)
	if err != nil {
		return nil, err
	}
	reclaim, err := parseMinimumReclaims(v, m.reclaim)
	if err != nil {
		return nil, err
	}
	for i := range soft {
		d, ok := grace[soft[i].Signal]
		if !ok {
			return nil, inputErrorf(m.soft[soft[i].Signal].o, "grace period must be specified for the soft eviction threshold %s", soft[i].Signal)
		}
		soft[i].GracePeriod = d
		soft[i].GracePeriodRaw = m.grace[soft[i].Signal].val
	}
	out := append(hard, soft...)
	for i := range out {
		if r, ok := reclaim[out[i].Signal]; ok {
			out[i].MinimumReclaim = r
		}
	}
	if allocatable {
		// addAllocatableThresholds: a copy of every hard memory.available, minimum reclaim
		// included.
		for _, t := range out {
			if t.Kind != Hard {
				continue
			}
			if t.Signal == SignalMemoryAvailable {
				c := t
				c.Signal = SignalAllocatableMemoryAvailable
				c.Source = "auto-added by the kubelet: copy of hard memory.available from " + t.Source + " (enforceNodeAllocatable contains pods)"
				out = append(out, c)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Threshold) int {
		if a.Kind != b.Kind {
			if a.Kind == Hard {
				return -1
			}
			return 1
		}
		return signalRank(a.Signal) - signalRank(b.Signal)
	})
	return out, nil
}

func parseStatements(v Version, m emap, kind Kind) ([]Threshold, error) {
	var out []Threshold
	for _, sig := range sortedKeys(m) {
		e := m[sig]
		t, err := parseThresholdStatement(v, sig, e.val)
		if err != nil {
			return nil, inputErrorf(e.o, "%s", err)
		}
		if t == nil {
			continue
		}
		t.Kind = kind
		t.Source = e.source()
		out = append(out, *t)
	}
	return out, nil
}

// parseThresholdStatement mirrors parseThresholdStatement in
// k/k@v1.37.2:pkg/kubelet/eviction/helpers.go (and the 1.7 variant for v < 1.10). It returns
// nil for a disabled signal. The messages are the kubelet's.
func parseThresholdStatement(v Version, signal, val string) (*Threshold, error) {
	if !ValidSignal(v, signal) {
		return nil, fmt.Errorf("unsupported eviction signal %s", signal)
	}
	if strings.HasSuffix(val, "%") {
		if !legacyGrammar(v) && (val == "0%" || val == "100%") {
			return nil, nil
		}
		p, err := parsePercentage(val)
		if err != nil {
			return nil, err
		}
		if legacyGrammar(v) {
			if p <= 0 {
				return nil, fmt.Errorf("eviction percentage threshold %s must be positive: %s", signal, val)
			}
		} else {
			if p < 0 {
				return nil, fmt.Errorf("eviction percentage threshold %s must be >= 0%%: %s", signal, val)
			}
			if p > 1 {
				return nil, fmt.Errorf("eviction percentage threshold %s must be <= 100%%: %s", signal, val)
			}
		}
		return &Threshold{Signal: signal, Raw: val, Value: Value{Percentage: p}}, nil
	}
	q, err := resource.ParseQuantity(val)
	if err != nil {
		return nil, err
	}
	if q.Sign() <= 0 {
		return nil, fmt.Errorf("eviction threshold %s must be positive: %s", signal, q.String())
	}
	// Raw stays as written: /configz echoes the configured string ("1000", not "1k").
	return &Threshold{Signal: signal, Raw: val, Value: Value{Quantity: &q}}, nil
}

// parsePercentage is the kubelet's: ParseFloat with bitSize 32 after trimming every trailing
// "%", divided by 100 in float32.
func parsePercentage(input string) (float32, error) {
	f, err := strconv.ParseFloat(strings.TrimRight(input, "%"), 32)
	if err != nil {
		return 0, err
	}
	return float32(f) / 100, nil
}

func parseGracePeriods(v Version, m emap) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, sig := range sortedKeys(m) {
		e := m[sig]
		if !ValidSignal(v, sig) {
			return nil, inputErrorf(e.o, "unsupported eviction signal %s", sig)
		}
		d, err := time.ParseDuration(e.val)
		if err != nil {
			return nil, inputErrorf(e.o, "%s", err)
		}
		if d < 0 {
			return nil, inputErrorf(e.o, "invalid eviction grace period specified: %s, must be a positive value", e.val)
		}
		out[sig] = d
	}
	return out, nil
}

// parseMinimumReclaims checks like parseMinimumReclaims in helpers.go: a percentage must be
// > 0, a quantity >= 0. The raw value is kept for display.
func parseMinimumReclaims(v Version, m emap) (map[string]string, error) {
	out := map[string]string{}
	for _, sig := range sortedKeys(m) {
		e := m[sig]
		if !ValidSignal(v, sig) {
			return nil, inputErrorf(e.o, "unsupported eviction signal %s", sig)
		}
		if strings.HasSuffix(e.val, "%") {
			p, err := parsePercentage(e.val)
			if err != nil {
				return nil, inputErrorf(e.o, "%s", err)
			}
			if p <= 0 {
				return nil, inputErrorf(e.o, "eviction percentage minimum reclaim %s must be positive: %s", sig, e.val)
			}
			out[sig] = e.val
			continue
		}
		q, err := resource.ParseQuantity(e.val)
		if err != nil {
			return nil, inputErrorf(e.o, "%s", err)
		}
		if q.Sign() < 0 {
			return nil, inputErrorf(e.o, "negative eviction minimum reclaim specified for %s", sig)
		}
		out[sig] = q.String()
	}
	return out, nil
}

// ParseLegacyThresholds parses a 1.7-era --eviction-hard/--eviction-soft string
// ("memory.available<100Mi,nodefs.available<10%"): "<" is the only operator and a signal may
// appear once (k/k@v1.7.0:pkg/kubelet/eviction/helpers.go parseThresholdStatements). Only the
// syntax is checked here; values are checked by ParseThresholdConfig with a 1.7 version.
func ParseLegacyThresholds(expr string) (map[string]string, error) {
	if expr == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, st := range strings.Split(expr, ",") {
		parts := strings.Split(st, "<")
		if len(parts) != 2 {
			return nil, fmt.Errorf("invalid eviction threshold syntax %s, expected <signal><operator><value>", st)
		}
		if _, dup := out[parts[0]]; dup {
			return nil, fmt.Errorf("found duplicate eviction threshold for signal %s", parts[0])
		}
		out[parts[0]] = parts[1]
	}
	return out, nil
}

// parseLegacyPairs parses a 1.7-era "signal=value,…" string (grace periods, minimum reclaim).
func parseLegacyPairs(expr, what string) (map[string]string, error) {
	if expr == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, st := range strings.Split(expr, ",") {
		parts := strings.Split(st, "=")
		if len(parts) != 2 {
			return nil, fmt.Errorf("invalid eviction %s syntax %s, expected <signal>=<value>", what, st)
		}
		out[parts[0]] = parts[1]
	}
	return out, nil
}
