package feed

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/evictguard/evictguard/monitor"
)

// AnnotationHeadroom is the Node annotation with the node's nearest eviction signal in
// machine-readable form (Headroom as compact JSON), for `evictguard fleet` and anyone
// without Prometheus. It is written in the same status patch as the EvictionPredicted
// condition — at its heartbeat and when it changes — so it costs no request of its own, and
// it is as fresh as the condition's lastHeartbeatTime.
const AnnotationHeadroom = "evictguard.dev/headroom"

// Headroom is the nearest signal of a node: the one past its threshold with the least
// headroom, else the one predicted to reach its threshold soonest, else the one with the
// least headroom relative to its capacity.
type Headroom struct {
	Signal string        `json:"signal"`
	Kind   string        `json:"kind"`
	State  monitor.State `json:"state"`
	// Headroom is available minus threshold in Unit (negative once past it).
	Headroom int64 `json:"headroom"`
	// Unit is bytes (*.available, memory), inodes (*.inodesFree) or pids (pid.available).
	Unit string `json:"unit"`
	// Percent is Headroom as a percentage of the signal's capacity; absent when the capacity
	// is unknown.
	Percent *float64 `json:"percent,omitempty"`
	// Seconds is the predicted time to the threshold; absent when the signal is not being
	// consumed or the predictor has too few samples.
	Seconds *int64 `json:"seconds,omitempty"`
	// Time is when the signals were sampled.
	Time time.Time `json:"time"`
}

// Unit is the unit of a signal's quantities.
func Unit(signal string) string {
	switch {
	case strings.HasSuffix(signal, ".inodesFree"):
		return "inodes"
	case signal == "pid.available":
		return "pids"
	default:
		return "bytes"
	}
}

// NearestSignal picks the node's nearest signal from snap; false when no signal could be
// observed.
func NearestSignal(snap *monitor.Snapshot) (Headroom, bool) {
	var cands []monitor.SignalStatus
	for _, s := range snap.Signals {
		if s.Error == "" && s.State != monitor.StateUnknown {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		return Headroom{}, false
	}
	ratio := func(s monitor.SignalStatus) float64 {
		if s.Capacity <= 0 {
			return math.Inf(1) // unknown capacity: after every signal with one
		}
		return float64(s.Headroom) / float64(s.Capacity)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if ab, bb := a.State == monitor.StateBreached, b.State == monitor.StateBreached; ab != bb {
			return ab
		}
		if a.State != monitor.StateBreached {
			if (a.SecondsToThreshold != nil) != (b.SecondsToThreshold != nil) {
				return a.SecondsToThreshold != nil
			}
			if a.SecondsToThreshold != nil && *a.SecondsToThreshold != *b.SecondsToThreshold {
				return *a.SecondsToThreshold < *b.SecondsToThreshold
			}
		}
		if ra, rb := ratio(a), ratio(b); ra != rb {
			return ra < rb
		}
		return a.Signal+"/"+a.Kind < b.Signal+"/"+b.Kind
	})
	s := cands[0]
	h := Headroom{Signal: s.Signal, Kind: s.Kind, State: s.State, Headroom: s.Headroom, Unit: Unit(s.Signal), Time: snap.Time.UTC().Truncate(time.Second)}
	if s.Capacity > 0 {
		p := math.Round(float64(s.Headroom)/float64(s.Capacity)*10000) / 100
		h.Percent = &p
	}
	if s.SecondsToThreshold != nil {
		sec := int64(math.Round(*s.SecondsToThreshold))
		h.Seconds = &sec
	}
	return h, true
}

// String is the annotation's value.
func (h Headroom) String() string {
	b, err := json.Marshal(h)
	if err != nil {
		return "" // cannot happen: plain fields
	}
	return string(b)
}

// ParseHeadroom reads an AnnotationHeadroom value.
func ParseHeadroom(s string) (Headroom, error) {
	var h Headroom
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return h, fmt.Errorf("annotation %s: %w", AnnotationHeadroom, err)
	}
	if h.Signal == "" {
		return h, fmt.Errorf("annotation %s: no signal in %q", AnnotationHeadroom, s)
	}
	return h, nil
}
