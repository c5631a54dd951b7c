package migration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// A Pin is a mount, in some mount namespace of the node, that keeps part of a directory tree
// in use: a filesystem mounted below it, a bind mount of something inside it (a container's
// rootfs or volume, seen from the container's namespace), or an overlay whose layers are in it.
// Files under a pinned tree are still in use by whatever runs with that mount, so a migration
// must neither copy them as if they were quiescent nor delete them.
type Pin struct {
	// PID is a process in the mount namespace that has the mount.
	PID int `json:"pid"`
	// Comm is that process's name.
	Comm string `json:"comm,omitempty"`
	// Mountpoint is where the mount is, as that namespace sees it.
	Mountpoint string `json:"mountpoint"`
	FSType     string `json:"fsType"`
	// Why says how the mount uses the tree.
	Why string `json:"why"`
}

func (p Pin) String() string {
	return fmt.Sprintf("%s (%s) in the mount namespace of pid %d (%s): %s", p.Mountpoint, p.FSType, p.PID, p.Comm, p.Why)
}

// FindPins lists the mounts that use dir (a node path) in every mount namespace of the node,
// reading /proc/<pid>/mountinfo of one process per namespace under root. dir itself being a
// mount point (its own filesystem) is not a pin.
//
// Three cases, because a container's namespace shows its mounts under its own paths:
//   - in the node's namespace, a mount point strictly below dir;
//   - in any namespace, a mount of the filesystem holding dir (same device) whose root is
//     strictly below dir — a bind mount such as a container's rootfs (vfs, native snapshotter)
//     or a volume. A view of dir itself (another namespace's copy of the node's mounts, a pod
//     mounting the data root as a hostPath, evictguard's own) reads it but runs nothing from it;
//   - in any namespace, an overlay whose lowerdir, upperdir or workdir is below dir (overlay2,
//     the overlayfs snapshotter).
func FindPins(root hostfs.Root, dir string) ([]Pin, error) {
	dir = filepath.Clean(dir)
	// The node's namespace is init's; without access to it (no hostPID, or an init this
	// process may not trace), this process's own.
	refProc := root.Path("/proc/1")
	self, err := readMountinfo(refProc + "/mountinfo")
	var refNS unix.Stat_t
	if err == nil {
		err = unix.Stat(refProc+"/ns/mnt", &refNS)
	}
	if err != nil {
		refProc = "/proc/self"
		if self, err = readMountinfo(refProc + "/mountinfo"); err != nil {
			return nil, err
		}
		if err := unix.Stat(refProc+"/ns/mnt", &refNS); err != nil {
			return nil, err
		}
	}
	// dir's filesystem: the mount with the longest mount point that covers it.
	var holder *mountinfo.Info
	for _, m := range self {
		if (m.Mountpoint == "/" || dir == m.Mountpoint || strings.HasPrefix(dir, m.Mountpoint+"/")) &&
			(holder == nil || len(m.Mountpoint) >= len(holder.Mountpoint)) {
			holder = m
		}
	}
	if holder == nil {
		return nil, fmt.Errorf("no mount covers %s", dir)
	}
	rel := filepath.Join(holder.Root, strings.TrimPrefix(dir, holder.Mountpoint))
	under := func(p, base string) bool { return p == base || strings.HasPrefix(p, base+"/") }

	procs, err := os.ReadDir(root.Path("/proc"))
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{}
	var pins []Pin
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(root.Path(fmt.Sprintf("/proc/%d/ns/mnt", pid)), &st); err != nil || seen[st.Ino] {
			continue // gone, a kernel thread, or a namespace already read
		}
		seen[st.Ino] = true
		mounts, err := readMountinfo(root.Path(fmt.Sprintf("/proc/%d/mountinfo", pid)))
		if err != nil {
			continue // the process exited
		}
		hostNS := st.Ino == refNS.Ino && st.Dev == refNS.Dev
		var comm []byte // read only for a namespace with pins
		for _, m := range mounts {
			why := ""
			switch {
			case hostNS && m.Mountpoint != dir && under(m.Mountpoint, dir):
				why = "mounted below " + dir
			case m.Major == holder.Major && m.Minor == holder.Minor && strings.HasPrefix(m.Root, strings.TrimSuffix(rel, "/")+"/"):
				why = fmt.Sprintf("a bind mount of %s", filepath.Join(dir, strings.TrimPrefix(m.Root, rel)))
			case m.FSType == "overlay":
				for _, o := range strings.Split(m.VFSOptions, ",") {
					k, v, _ := strings.Cut(o, "=")
					if k != "lowerdir" && k != "upperdir" && k != "workdir" {
						continue
					}
					if slices.ContainsFunc(strings.Split(v, ":"), func(l string) bool { return under(filepath.Clean(l), dir) }) {
						why = "an overlay whose " + k + " is in " + dir
						break
					}
				}
			}
			if why != "" {
				if comm == nil {
					comm, _ = os.ReadFile(root.Path(fmt.Sprintf("/proc/%d/comm", pid)))
				}
				pins = append(pins, Pin{PID: pid, Comm: strings.TrimSpace(string(comm)), Mountpoint: m.Mountpoint, FSType: m.FSType, Why: why})
			}
		}
	}
	return pins, nil
}

func readMountinfo(file string) ([]*mountinfo.Info, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	ms, err := mountinfo.GetMountsFromReader(bytes.NewReader(data), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return ms, nil
}

// errPinned is returned when a tree is still in use by mounts.
var errPinned = errors.New("still in use by mounts")

// pinnedError describes pins (at most a few, then a count).
func pinnedError(dir string, pins []Pin) error {
	var b strings.Builder
	for i, p := range pins {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(pins)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return fmt.Errorf("%s is %w: %s", dir, errPinned, b.String())
}
