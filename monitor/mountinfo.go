package monitor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/<pid>/mountinfo.
type mountEntry struct {
	Major, Minor uint32
	Root         string
	Mountpoint   string
	FsType       string
	Source       string
}

// parseMountInfo parses the kernel's mountinfo format (proc(5)):
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func parseMountInfo(data []byte) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed %q", line, sc.Text())
		}
		maj, min, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: bad device %q", line, f[2])
		}
		out = append(out, mountEntry{
			Major: uint32(ma), Minor: uint32(mi),
			Root:       unescapeMount(f[3]),
			Mountpoint: unescapeMount(f[4]),
			FsType:     f[sep+1],
			Source:     unescapeMount(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes the kernel's octal escapes (\040 for space, \011, \012, \134).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
