package monitor

import (
	"time"
)

// Role says what a filesystem is to the kubelet (docs/architecture.md#filesystems-and-signals).
type Role string

// Filesystem roles.
const (
	RoleNodeFs      Role = "nodefs"
	RoleImageFs     Role = "imagefs"
	RoleContainerFs Role = "containerfs"
	RoleLogs        Role = "logs"
)

// State is the evaluated state of one signal.
type State string

// Signal states. StateUnknown is used when the observation failed (a hung or missing mount)
// or evictguard does not observe the signal.
const (
	StateOK       State = "ok"
	StateWarning  State = "warning"
	StateBreached State = "breached"
	StateUnknown  State = "unknown"
)

// severity orders states so the worst can be picked.
func (s State) severity() int {
	switch s {
	case StateBreached:
		return 3
	case StateWarning:
		return 2
	case StateUnknown:
		return 1
	}
	return 0
}

// Sources of a runtime root that the running runtime reported itself (Filesystem.Source
// begins with one of them); any other source is its config file or a default.
const (
	SourceDockerAPI = "docker API DockerRootDir"
	SourceCRI       = "CRI ImageFsInfo"
)

// Filesystem is one directory the kubelet (or the log pipeline) cares about, with the
// filesystem it lives on. Paths are node paths; HostPath is where this process sees it.
type Filesystem struct {
	Role Role `json:"role"`
	// Path is the directory on the node (kubelet root dir, runtime root, log dir).
	Path string `json:"path"`
	// Mountpoint and Device come from the mount table entry with the longest mountpoint
	// prefix on the same device.
	Mountpoint string `json:"mountpoint"`
	Device     string `json:"device"`
	FsType     string `json:"fsType,omitempty"`
	// Source says how the path was found ("kubelet --root-dir", "daemon.json data-root",
	// "docker API DockerRootDir", "CRI ImageFsInfo", "default").
	Source string `json:"source,omitempty"`
	// SameAs names the role whose filesystem this is when it is not its own (imagefs on the
	// nodefs disk: "nodefs").
	SameAs string `json:"sameAs,omitempty"`

	HostPath string `json:"-"`
	// Dev is st_dev of Path; equal Dev means the same filesystem, as the kubelet decides it.
	Dev uint64 `json:"-"`
}

// Usage is one statfs sample with the kubelet's (cadvisor's) maths:
// Capacity = f_blocks·f_frsize, Available = f_bavail·f_frsize, Inodes = f_files,
// InodesFree = f_ffree.
type Usage struct {
	Time       time.Time
	Capacity   int64
	Available  int64
	Inodes     int64
	InodesFree int64
}

// FilesystemStatus is a Filesystem with its latest sample, as printed by `status`.
type FilesystemStatus struct {
	Filesystem
	CapacityBytes  int64 `json:"capacityBytes"`
	AvailableBytes int64 `json:"availableBytes"`
	Inodes         int64 `json:"inodes"`
	InodesFree     int64 `json:"inodesFree"`
	// Consumption rates (positive = filling), null until there are enough samples.
	BytesFillRate  *float64 `json:"bytesFillRatePerSecond"`
	InodesFillRate *float64 `json:"inodesFillRatePerSecond"`
	// Log directories only: bytes allocated under the directory and its growth.
	LogBytes          *int64   `json:"logBytes,omitempty"`
	LogFiles          *int64   `json:"logFiles,omitempty"`
	LogGrowthRate     *float64 `json:"logGrowthBytesPerSecond,omitempty"`
	LogScanInProgress bool     `json:"logScanInProgress,omitempty"`
	Error             string   `json:"error,omitempty"`
}

// SignalStatus is one eviction signal against its effective threshold (docs/architecture.md#filesystems-and-signals).
type SignalStatus struct {
	Signal string `json:"signal"`
	Kind   string `json:"kind"`
	// Threshold is the value as the kubelet prints it ("10%", "100Mi").
	Threshold string `json:"threshold"`
	// ThresholdQuantity, Observed and Headroom are bytes for *.available and inodes for
	// *.inodesFree (PIDs for pid.available). Headroom = Observed − ThresholdQuantity.
	ThresholdQuantity  int64    `json:"thresholdQuantity"`
	Observed           int64    `json:"observed"`
	Headroom           int64    `json:"headroom"`
	State              State    `json:"state"`
	SecondsToThreshold *float64 `json:"secondsToThreshold"`

	Capacity int64 `json:"capacity"`
	// Met is the kubelet's own verdict this round (threshold > observed, or, while it is
	// being reclaimed, threshold+minimumReclaim > observed), without our hysteresis.
	Met bool `json:"met"`
	// FillRate is the consumption of the observed quantity per second (positive = the
	// headroom is shrinking); null when unknown.
	FillRate       *float64 `json:"fillRatePerSecond"`
	GracePeriod    string   `json:"gracePeriod,omitempty"`
	MinimumReclaim string   `json:"minimumReclaim,omitempty"`
	Source         string   `json:"source,omitempty"`
	// Filesystem is the node path whose filesystem was observed (disk signals).
	Filesystem string `json:"filesystem,omitempty"`
	// Since is when the signal entered its current state.
	Since time.Time `json:"since"`
	Error string    `json:"error,omitempty"`
}

// Snapshot is the result of one monitoring cycle.
type Snapshot struct {
	Time        time.Time          `json:"time"`
	Filesystems []FilesystemStatus `json:"filesystems"`
	Signals     []SignalStatus     `json:"signals"`
	Warnings    []string           `json:"warnings,omitempty"`
}

// Worst returns the most severe state among the signals (ok when there are none).
func (s *Snapshot) Worst() State {
	worst := StateOK
	for _, sig := range s.Signals {
		if sig.State.severity() > worst.severity() {
			worst = sig.State
		}
	}
	return worst
}

// Breached reports whether any signal is breached.
func (s *Snapshot) Breached() bool {
	for _, sig := range s.Signals {
		if sig.State == StateBreached {
			return true
		}
	}
	return false
}
