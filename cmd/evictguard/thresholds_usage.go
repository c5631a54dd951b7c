package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
)

// usageWarningsFor discovers the filesystems as `status` does and samples them once with the
// monitor, then returns the warnings of usageWarnings. It does not fail: on a machine without
// a kubelet or a runtime the discovery falls back to / and to imagefs on nodefs, and anything
// that cannot be observed becomes a warning.
func usageWarningsFor(ctx context.Context, g *globalOptions, eff *kubeletcfg.Effective) []string {
	dopts := monitor.DiscoverOptions{HostRoot: g.root(), Logger: g.logger}
	withKubelet(&dopts, eff)
	layout, err := monitor.DiscoverFilesystems(ctx, dopts)
	if err != nil {
		return []string{fmt.Sprintf("current usage not checked: %v", err)}
	}
	// The log directories have no eviction signal; leave them out so no log walk starts.
	sampled := *layout
	sampled.Filesystems = nil
	for _, fs := range layout.Filesystems {
		if fs.Role != monitor.RoleLogs {
			sampled.Filesystems = append(sampled.Filesystems, fs)
		}
	}
	m, err := monitor.New(monitor.Config{Layout: &sampled, Thresholds: eff.Thresholds, KubeletVersion: eff.Version,
		HostRoot: g.root(), PodsCgroup: eff.Cgroups.PodsCgroup(), Logger: g.logger})
	if err != nil {
		return []string{fmt.Sprintf("current usage not checked: %v", err)}
	}
	defer m.Close()
	snap, err := m.Step(ctx)
	if err != nil {
		return []string{fmt.Sprintf("current usage not checked: %v", err)}
	}
	return usageWarnings(eff, &sampled, m.Thresholds(), snap)
}

// usageWarnings names the traps that need the node's filesystems and one sample of them:
//   - imagefs.* thresholds on a node without a separate imagefs: the kubelet evaluates them
//     against nodefs (reference §5), so with the defaults DiskPressure comes at 15 % available,
//     not 10 %;
//   - configured containerfs.* thresholds: which copy the kubelet uses instead on this node;
//   - thresholds the current usage already breaches (the kubelet's own test,
//     threshold > available), and filesystems that could not be sampled.
//
// evaluated are the monitor's thresholds (with the kubelet's containerfs copies) and snap its
// sample of them.
func usageWarnings(eff *kubeletcfg.Effective, layout *monitor.Layout, evaluated []kubeletcfg.Threshold, snap *monitor.Snapshot) []string {
	var out []string
	status := map[string]monitor.SignalStatus{}
	for _, s := range snap.Signals {
		status[s.Signal+"/"+s.Kind] = s
	}
	nodefs, imagefs := layout.ByRole(monitor.RoleNodeFs), layout.ByRole(monitor.RoleImageFs)
	for _, fs := range snap.Filesystems {
		if fs.Error != "" && fs.Role != monitor.RoleLogs {
			out = append(out, fmt.Sprintf("current usage of %s (%s) not checked: %s", fs.Role, fs.Path, fs.Error))
		}
	}

	if !layout.DedicatedImageFs && nodefs != nil && imagefs != nil {
		why := "no container runtime was found, so there is no separate imagefs"
		if layout.Runtime != "" {
			why = fmt.Sprintf("%s's image store %s is on the same filesystem as the kubelet root dir %s", layout.Runtime, imagefs.Path, nodefs.Path)
		}
		for _, th := range eff.Thresholds {
			sig, ok := strings.CutPrefix(th.Signal, "imagefs.")
			if !ok {
				continue
			}
			msg := fmt.Sprintf("%s %s<%s (%s) is evaluated against nodefs (%s): %s", th.Kind, th.Signal, th.Raw, th.Source, fsName(nodefs), why)
			img, imgOK := status[th.Signal+"/"+string(th.Kind)]
			node, nodeOK := status["nodefs."+sig+"/"+string(th.Kind)]
			switch {
			case !nodeOK:
				msg += fmt.Sprintf("; it is the only %s threshold on that filesystem's %s", th.Kind, quantityName(sig))
			case imgOK && img.Error == "" && node.Error == "" && img.ThresholdQuantity > node.ThresholdQuantity:
				msg += fmt.Sprintf("; it is stricter than nodefs.%s<%s: pressure at %s %s instead of %s",
					sig, node.Threshold, amount(th.Signal, img.ThresholdQuantity), quantityName(sig), amount(th.Signal, node.ThresholdQuantity))
			}
			out = append(out, msg)
		}
	}

	for _, th := range eff.IgnoredContainerFs {
		var cp *kubeletcfg.Threshold
		for i := range evaluated {
			if evaluated[i].Signal == th.Signal && evaluated[i].Kind == th.Kind {
				cp = &evaluated[i]
			}
		}
		msg := fmt.Sprintf("%s %s<%s (%s) has no effect on this node: ", th.Kind, th.Signal, th.Raw, th.Source)
		if cp == nil {
			msg += fmt.Sprintf("the kubelet has no %s %s threshold here (nothing to copy it from)", th.Kind, th.Signal)
		} else {
			msg += fmt.Sprintf("the kubelet uses %s instead, %s", cp.Raw, cp.Source)
			if !layout.DedicatedImageFs && nodefs != nil {
				msg += fmt.Sprintf(", evaluated against nodefs (%s): there is no separate imagefs", fsName(nodefs))
			}
		}
		out = append(out, msg)
	}

	for _, th := range eff.Thresholds {
		s, ok := status[th.Signal+"/"+string(th.Kind)]
		if !ok || s.Error != "" || !s.Met {
			continue
		}
		where := ""
		if role, _, _ := strings.Cut(th.Signal, "."); role == string(monitor.RoleNodeFs) || role == string(monitor.RoleImageFs) {
			if fs := layout.ByRole(monitor.Role(role)); fs != nil {
				where = " on " + fsName(fs)
			}
		}
		msg := fmt.Sprintf("%s %s<%s (%s) is already breached: %s %s%s, below the threshold of %s (capacity %s)",
			th.Kind, th.Signal, th.Raw, th.Source, amount(th.Signal, s.Observed), observedName(th.Signal), where,
			amount(th.Signal, s.ThresholdQuantity), amount(th.Signal, s.Capacity))
		if th.Kind == kubeletcfg.Soft {
			msg += fmt.Sprintf("; the kubelet reports %s and evicts pods once it stays breached for %s", pressureOf(th.Signal), grace(th))
		} else {
			msg += fmt.Sprintf("; the kubelet reports %s and evicts pods now", pressureOf(th.Signal))
		}
		out = append(out, msg)
	}
	return out
}

// fsName is "PATH (mounted at MOUNTPOINT)" or PATH.
func fsName(fs *monitor.Filesystem) string {
	if fs == nil {
		return "?"
	}
	if fs.Mountpoint == "" || fs.Mountpoint == fs.Path {
		return fs.Path
	}
	return fmt.Sprintf("%s, mounted at %s", fs.Path, fs.Mountpoint)
}

// amount prints a signal's quantity: bytes for *.available (but pid.available), else a count.
func amount(signal string, v int64) string {
	if strings.HasSuffix(signal, ".available") && signal != kubeletcfg.SignalPIDAvailable {
		return units.Bytes(v)
	}
	return fmt.Sprint(v)
}

func quantityName(sig string) string {
	if sig == "inodesFree" {
		return "inodes free"
	}
	return "available"
}

func observedName(signal string) string {
	switch {
	case strings.HasSuffix(signal, ".inodesFree"):
		return "inodes free"
	case signal == kubeletcfg.SignalPIDAvailable:
		return "PIDs available"
	}
	return "available"
}

// pressureOf is the Node condition a signal drives (eviction api/types.go signalToNodeCondition).
func pressureOf(signal string) string {
	switch {
	case strings.HasPrefix(signal, "memory.") || strings.HasPrefix(signal, "allocatableMemory."):
		return "MemoryPressure"
	case signal == kubeletcfg.SignalPIDAvailable:
		return "PIDPressure"
	}
	return "DiskPressure"
}
