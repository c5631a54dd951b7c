package monitor

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/evictguard/evictguard/kubeletcfg"
)

// ContainerFsThresholds returns thresholds with the containerfs.* signals the kubelet
// synthesises (UpdateContainerFsThresholds, KEP-4191): any configured containerfs.* is
// dropped (the kubelet ignores it, with a warning), then containerfs.available and
// containerfs.inodesFree are copied from imagefs.* when there is a dedicated imagefs that
// holds containers too, and from nodefs.* otherwise (one filesystem, or a split layout where
// containers live on nodefs). Kubelets before 1.29 have no containerfs signals: pass
// kubeletVersion so they are left alone ("" means a current kubelet).
func ContainerFsThresholds(ths []kubeletcfg.Threshold, kubeletVersion string, dedicatedImageFs, split bool) ([]kubeletcfg.Threshold, []string) {
	if !versionAtLeast(kubeletVersion, 1, 29) {
		return ths, nil
	}
	var warnings []string
	out := make([]kubeletcfg.Threshold, 0, len(ths)+2)
	for _, th := range ths {
		if strings.HasPrefix(th.Signal, "containerfs.") {
			warnings = append(warnings, fmt.Sprintf("found %s for %s eviction (%s); the kubelet ignores it and uses its own copy", th.Signal, th.Kind, th.Source))
			continue
		}
		out = append(out, th)
	}
	from := "nodefs"
	if dedicatedImageFs && !split {
		from = "imagefs"
	}
	for _, th := range out[:len(out):len(out)] {
		sig, ok := strings.CutPrefix(th.Signal, from+".")
		if !ok {
			continue
		}
		c := th
		c.Signal = "containerfs." + sig
		c.Source = fmt.Sprintf("copy of %s (the kubelet derives containerfs from %s)", th.Signal, from)
		out = append(out, c)
	}
	return out, warnings
}

// versionAtLeast reports whether "X.Y[.Z…]" (optionally with a leading v) is ≥ major.minor;
// unparsable or empty versions count as current.
func versionAtLeast(v string, major, minor int) bool {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if v == "" {
		return true
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || (ma == major && mi >= minor)
}
