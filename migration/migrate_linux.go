package migration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsInfo describes the filesystem a path is (or would be created) on.
type fsInfo struct {
	Existing string // the path, or its nearest existing ancestor
	Dev      uint64
	Type     string
	Avail    int64 // bytes available to unprivileged users
	Free     int64 // inodes free
}

var fsTypeNames = map[int64]string{
	unix.TMPFS_MAGIC: "tmpfs", unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs",
	unix.BTRFS_SUPER_MAGIC: "btrfs", unix.OVERLAYFS_SUPER_MAGIC: "overlay", unix.NFS_SUPER_MAGIC: "nfs",
	0x2fc12fc1: "zfs", 0x65735546: "fuse", unix.F2FS_SUPER_MAGIC: "f2fs",
}

func statFS(p string) (fsInfo, error) {
	p = filepath.Clean(p)
	for {
		var st unix.Stat_t
		err := unix.Stat(p, &st)
		if err == nil {
			var s unix.Statfs_t
			if err := unix.Statfs(p, &s); err != nil {
				return fsInfo{}, fmt.Errorf("statfs %s: %w", p, err)
			}
			name := fsTypeNames[int64(s.Type)] //nolint:unconvert // Type is int32 on 32-bit architectures
			if name == "" {
				name = fmt.Sprintf("0x%x", s.Type)
			}
			return fsInfo{Existing: p, Dev: st.Dev, Type: name, Avail: int64(s.Bavail) * s.Bsize, Free: int64(s.Ffree)}, nil
		}
		if !errors.Is(err, unix.ENOENT) || p == "/" {
			return fsInfo{}, fmt.Errorf("stat %s: %w", p, err)
		}
		p = filepath.Dir(p)
	}
}

// fsFeatures is what a storage driver may need from the target filesystem.
type fsFeatures struct {
	DType, TrustedXattr, Whiteout bool
}

// probeFS creates a scratch directory in dir and tries what overlay needs: getdents reporting
// d_type, trusted.* xattrs and character device 0:0 (whiteouts). It removes what it created.
func probeFS(dir string) (fsFeatures, error) {
	var f fsFeatures
	tmp, err := os.MkdirTemp(dir, ".evictguard-probe-")
	if err != nil {
		return f, fmt.Errorf("cannot write to %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("probe"), 0o600); err != nil {
		return f, fmt.Errorf("cannot write to %s: %w", dir, err)
	}
	f.DType = hasDType(tmp)
	f.TrustedXattr = unix.Setxattr(file, "trusted.evictguard.probe", []byte("y"), 0) == nil
	f.Whiteout = unix.Mknod(filepath.Join(tmp, "wh"), unix.S_IFCHR, 0) == nil
	return f, nil
}

// hasDType reads dir with getdents64 and reports whether entries carry a file type (XFS
// formatted with ftype=0 does not, and overlay refuses to run on it).
func hasDType(dir string) bool {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	n, err := unix.Getdents(fd, buf)
	if err != nil || n <= 0 {
		return false
	}
	for off := 0; off < n; {
		d := (*unix.Dirent)(unsafe.Pointer(&buf[off]))
		name := unix.ByteSliceToString((*[256]byte)(unsafe.Pointer(&d.Name[0]))[:])
		if name == "file" {
			return d.Type == unix.DT_REG
		}
		if d.Reclen == 0 {
			break
		}
		off += int(d.Reclen)
	}
	return false
}

// syncFilesystem writes the filesystem holding dir to its device (syncfs(2)): the copy's data
// and metadata, which the copy engine leaves to the page cache for speed. The migration does
// it before the runtime's configuration points at the new root, so that a power loss after
// the switch finds the data there, not a tree of empty files.
func syncFilesystem(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}
