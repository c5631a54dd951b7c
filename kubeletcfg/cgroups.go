package kubeletcfg

import (
	"path"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Cgroups is where the kubelet puts its pods in the cgroup hierarchy: what evictguard needs
// to observe allocatableMemory.available the kubelet's way.
type Cgroups struct {
	// Driver is cgroupDriver / --cgroup-driver: "cgroupfs" (the kubelet's default) or
	// "systemd" (what kubeadm configures).
	Driver string `json:"driver"`
	// Root is cgroupRoot / --cgroup-root; "/" when unset and pods get their own cgroup.
	Root string `json:"root"`
	// PerQOS is cgroupsPerQOS / --cgroups-per-qos (default true): pods live in a "kubepods"
	// cgroup under Root, whose memory limit is node allocatable.
	PerQOS bool `json:"perQOS"`
}

// Cgroup drivers.
const (
	CgroupDriverCgroupfs = "cgroupfs"
	CgroupDriverSystemd  = "systemd"
)

// podsCgroupName is the kubelet's node-allocatable cgroup (cm defaultNodeAllocatableCgroupName).
const podsCgroupName = "kubepods"

// cgroupsOf combines the configuration file (after drop-ins) with the command-line flags,
// which win, and the kubelet's defaults (v1beta1 SetDefaults_KubeletConfiguration; cgroupRoot
// "/" when cgroupsPerQOS, k/k@v1.37.2:cmd/kubelet/app/server.go run).
func cgroupsOf(kc *kubeletv1beta1.KubeletConfiguration, kf *kubeletFlags) Cgroups {
	c := Cgroups{Driver: kc.CgroupDriver, Root: kc.CgroupRoot, PerQOS: kc.CgroupsPerQOS == nil || *kc.CgroupsPerQOS}
	if kf.has(flagCgroupDriver) {
		c.Driver = kf.cgroupDriver
	}
	if kf.has(flagCgroupRoot) {
		c.Root = kf.cgroupRoot
	}
	if kf.has(flagCgroupsPerQOS) {
		c.PerQOS = kf.cgroupsPerQOS
	}
	if c.Driver == "" {
		c.Driver = CgroupDriverCgroupfs
	}
	if c.Root == "" && c.PerQOS {
		c.Root = "/"
	}
	return c
}

// PodsCgroup is the kubelet's pods cgroup as a path inside a cgroup hierarchy ("/kubepods"
// with cgroupfs, "/kubepods.slice" with systemd; "/" when pods are not grouped), the name the
// kubelet's container manager gives it (k/k@v1.37.2:pkg/kubelet/cm/container_manager_linux.go
// NewContainerManager and cgroup_manager_linux.go ToCgroupfs/ToSystemd).
func (c Cgroups) PodsCgroup() string {
	// ParseCgroupfsToCgroupName: the root is split on "/" whatever the driver.
	var name []string
	if r := strings.TrimPrefix(c.Root, "/"); r != "" {
		name = strings.Split(r, "/")
	}
	if c.PerQOS {
		name = append(name, podsCgroupName)
	}
	if len(name) == 0 {
		return "/"
	}
	if c.Driver != CgroupDriverSystemd {
		return "/" + path.Join(name...)
	}
	// ToSystemd: "-" in a component becomes "_", the components are joined with "-" into one
	// slice name, and the slice is expanded to its parents' path (systemd's unit naming,
	// runc's ExpandSlice). Written here because the library that has ExpandSlice
	// (opencontainers/cgroups/systemd) pulls in a cgroup manager, D-Bus and logrus for four
	// lines of string work.
	for i, p := range name {
		name[i] = strings.ReplaceAll(p, "-", "_")
	}
	var out, prefix string
	for _, p := range name {
		out += "/" + prefix + p + ".slice"
		prefix += p + "-"
	}
	return out
}
