package kubeletcfg

// DefaultEvictionHard returns the kubelet's built-in evictionHard for version v on goos
// ("linux", "windows", …). It returns a fresh map.
//
//   - ≤1.9: memory.available<100Mi, nodefs.available<10%, nodefs.inodesFree<5% on every OS
//     (k/k@v1.7.0:pkg/apis/componentconfig/v1alpha1/defaults.go).
//   - 1.10–1.29 on Linux: the same plus imagefs.available<15%; on other OSes from 1.12
//     without nodefs.inodesFree (k/k PR #67709).
//   - ≥1.30 on Linux: plus imagefs.inodesFree<5% (k/k PR #121834,
//     pkg/kubelet/eviction/defaults_linux.go).
//   - ≥1.31 on Windows: memory.available<500Mi (defaults_windows.go, k/k PR #122922).
func DefaultEvictionHard(v Version, goos string) map[string]string {
	if !v.AtLeast(10) {
		return map[string]string{
			SignalMemoryAvailable:  "100Mi",
			SignalNodeFsAvailable:  "10%",
			SignalNodeFsInodesFree: "5%",
		}
	}
	m := map[string]string{
		SignalMemoryAvailable:  "100Mi",
		SignalNodeFsAvailable:  "10%",
		SignalImageFsAvailable: "15%",
	}
	switch {
	case goos == "linux" || !v.AtLeast(12):
		m[SignalNodeFsInodesFree] = "5%"
		if goos == "linux" && v.AtLeast(30) {
			m[SignalImageFsInodesFree] = "5%"
		}
	case goos == "windows" && v.AtLeast(31):
		m[SignalMemoryAvailable] = "500Mi"
	}
	return m
}

// flagsOnlyHasDefaults reports whether a kubelet started without --config gets the default
// evictionHard. From 1.26 the v1beta1 defaulter no longer sets it; only loadConfigFile does
// (k/k@v1.26.0:cmd/kubelet/app/server.go, k/k PR #110263).
func flagsOnlyHasDefaults(v Version) bool { return !v.AtLeast(26) }

// mergeDefaultsSupported: mergeDefaultEvictionSettings exists from 1.33 (k/k PR #127577).
func mergeDefaultsSupported(v Version) bool { return v.AtLeast(33) }
