package kubeletcfg

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Kind says whether a threshold is hard (evict now) or soft (evict after a grace period).
type Kind string

// Threshold kinds, as printed in the thresholds JSON contract.
const (
	Hard Kind = "hard"
	Soft Kind = "soft"
)

// Value is a parsed threshold value: either a quantity (bytes, inodes, PIDs) or a fraction of
// capacity. Exactly one of Quantity and Percentage is set; Percentage is float32 because the
// kubelet parses percentages with ParseFloat(…, 32).
type Value struct {
	Quantity   *resource.Quantity
	Percentage float32
}

// Threshold is one effective eviction threshold with the place it came from.
type Threshold struct {
	Signal string
	Kind   Kind
	// Raw is the value as configured, which is how the kubelet's /configz prints it
	// ("10%", "100Mi", "1000").
	Raw   string
	Value Value
	// GracePeriod is only meaningful for soft thresholds.
	GracePeriod time.Duration
	// GracePeriodRaw is the grace period as configured ("2m", as /configz prints it).
	GracePeriodRaw string
	// MinimumReclaim is the raw minimum-reclaim value for the signal ("" when none).
	MinimumReclaim string
	// Source names where the value came from: "default (kubelet 1.37, …)", "FILE:LINE",
	// "flag --eviction-hard in FILE:LINE via $VAR", "configz".
	Source string
}

// Threshold signals the kubelet knows (1.14+); allocatableNodeFs.available was removed in 1.14.
const (
	SignalMemoryAvailable            = "memory.available"
	SignalAllocatableMemoryAvailable = "allocatableMemory.available"
	SignalNodeFsAvailable            = "nodefs.available"
	SignalNodeFsInodesFree           = "nodefs.inodesFree"
	SignalImageFsAvailable           = "imagefs.available"
	SignalImageFsInodesFree          = "imagefs.inodesFree"
	SignalContainerFsAvailable       = "containerfs.available"
	SignalContainerFsInodesFree      = "containerfs.inodesFree"
	SignalPIDAvailable               = "pid.available"
)

// ThresholdBytes returns the threshold as an absolute amount for a filesystem (or resource) of
// the given capacity, the way the kubelet does: quantities as is, percentages as
// float32(capacity) * percentage, truncated.
func (v Value) ThresholdBytes(capacity int64) int64 {
	if v.Quantity != nil {
		return v.Quantity.Value()
	}
	return int64(float64(v.Percentage) * float64(capacity))
}
