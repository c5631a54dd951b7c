package monitor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// mountEntry is one line of /proc/<pid>/mountinfo.
type mountEntry struct {
	Major, Minor uint32
	Root         string
	Mountpoint   string
	FsType       string
	Source       string
}

// parseMountInfo parses the kernel's mountinfo format (proc(5)) with moby/sys/mountinfo, the
// parser runc, containerd and dockerd share (octal escapes such as \040 decoded).
func parseMountInfo(data []byte) ([]mountEntry, error) {
	infos, err := mountinfo.GetMountsFromReader(bytes.NewReader(data), nil)
	if err != nil {
		return nil, fmt.Errorf("parse mountinfo: %w", err)
	}
	out := make([]mountEntry, 0, len(infos))
	for _, m := range infos {
		out = append(out, mountEntry{
			Major: uint32(m.Major), Minor: uint32(m.Minor), //nolint:gosec // device numbers are 32-bit in the kernel
			Root: m.Root, Mountpoint: m.Mountpoint, FsType: m.FSType, Source: m.Source,
		})
	}
	return out, nil
}

// findMount returns the mount of the filesystem holding path: among the entries whose
// mountpoint contains path and that are on the given device (st_dev major:minor), the one
// mounting the most of that filesystem (the shortest root, "/" for a whole-filesystem mount),
// then the longest mountpoint. So a bind mount of a directory of the same filesystem onto
// itself or below it — the kubelet does that to its root dir, dockerd to its data root — does
// not hide the filesystem's own mountpoint, while a directory reachable only through a bind
// mount (/data/docker bound at /var/lib/docker) reports that bind mount. Without an entry on
// the device it falls back to the longest mountpoint containing path. ok is false when
// nothing matches.
func findMount(mounts []mountEntry, path string, major, minor uint32) (mountEntry, bool) {
	path = filepath.Clean(path)
	best, bestDev := -1, -1
	for i, m := range mounts {
		if !pathWithin(path, m.Mountpoint) {
			continue
		}
		// later entries shadow earlier ones on the same mountpoint: >= keeps the last
		if best < 0 || len(m.Mountpoint) >= len(mounts[best].Mountpoint) {
			best = i
		}
		if m.Major != major || m.Minor != minor {
			continue
		}
		if bestDev < 0 {
			bestDev = i
			continue
		}
		root, bestRoot := len(filepath.Clean(m.Root)), len(filepath.Clean(mounts[bestDev].Root))
		if root < bestRoot || (root == bestRoot && len(m.Mountpoint) >= len(mounts[bestDev].Mountpoint)) {
			bestDev = i
		}
	}
	if bestDev >= 0 {
		return mounts[bestDev], true
	}
	if best >= 0 {
		return mounts[best], true
	}
	return mountEntry{}, false
}

// pathWithin reports whether path is dir or below it.
func pathWithin(path, dir string) bool {
	dir = filepath.Clean(dir)
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// readMounts reads this process's mount table. evictguard statfs()es paths as it sees them
// (under the host root), so its own table is the one that names the right mounts; in a
// DaemonSet with a HostToContainer-propagated /host it shows the node's mounts below /host.
func readMounts(path string) ([]mountEntry, error) {
	if path == "" {
		path = "/proc/self/mountinfo"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	m, err := parseMountInfo(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
