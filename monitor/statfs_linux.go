package monitor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// statfsUsage does the kubelet's maths (cadvisor fs.getVfsStats) directly on statfs(2).
// gopsutil's disk.Usage is not used here: it multiplies by f_bsize, not f_frsize, and names
// f_bavail·f_bsize "Free"; the two sizes agree on ext4/xfs/tmpfs but not everywhere (some
// FUSE and network filesystems), and then only f_frsize gives the kubelet's numbers.
func statfsUsage(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, err
	}
	return usageFromStatfs(&st), nil
}

func usageFromStatfs(st *unix.Statfs_t) Usage {
	frsize := int64(st.Frsize) //nolint:unconvert // int32 on 32-bit architectures
	if frsize == 0 {           // very old kernels leave f_frsize unset
		frsize = int64(st.Bsize) //nolint:unconvert // int32 on 32-bit architectures
	}
	return Usage{
		Capacity:   int64(st.Blocks) * frsize,
		Available:  int64(st.Bavail) * frsize,
		Inodes:     int64(st.Files),
		InodesFree: int64(st.Ffree),
	}
}

// deviceOf returns st_dev of path, the kubelet's notion of "same filesystem".
func deviceOf(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return uint64(st.Dev), nil //nolint:unconvert // Dev is uint32 on some platforms
}

// devMajorMinor splits st_dev as the kernel's mountinfo prints it.
func devMajorMinor(dev uint64) (uint32, uint32) { return unix.Major(dev), unix.Minor(dev) }
