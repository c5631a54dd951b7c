package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// DiskOptions describe a real block filesystem on a loop device.
type DiskOptions struct {
	// Size of the sparse image in bytes (default 512 MiB).
	Size int64
	// FS is "ext4" (default; 5 % of blocks reserved for root, as mkfs.ext4 makes it) or
	// "xfs" (ftype=1, which overlay needs).
	FS string
	// Mkfs are extra mkfs arguments (e.g. "-m", "0", or "-N", "2000" for fewer inodes).
	Mkfs []string
	// Name names the mount point directory (default the filesystem type).
	Name string
}

// Disk is a mounted loop-device filesystem.
type Disk struct {
	Image, Device, Mountpoint, FS string
	Size                          int64
}

// LoopDisk creates a sparse image, attaches it to a free loop device, makes the filesystem
// and mounts it. Cleanup unmounts everything below and the disk itself (deepest first),
// detaches the loop device and deletes the image; the leak check reports a loop device left
// attached to an image of this run.
func LoopDisk(t testing.TB, opts DiskOptions) *Disk {
	t.Helper()
	RequireRoot(t)
	Binary(t, "losetup", "mount")
	if opts.Size == 0 {
		opts.Size = 512 << 20
	}
	if opts.FS == "" {
		opts.FS = "ext4"
	}
	if opts.Name == "" {
		opts.Name = opts.FS
	}
	mkfs := Binary(t, "mkfs."+opts.FS, map[string]string{"ext4": "e2fsprogs", "xfs": "xfsprogs"}[opts.FS])
	dir := TempDir(t, "disk-"+opts.Name)
	d := &Disk{Image: filepath.Join(dir, opts.Name+".img"), Mountpoint: filepath.Join(dir, "mnt"), FS: opts.FS, Size: opts.Size}
	f, err := os.Create(d.Image)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(opts.Size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", d.Image).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", d.Image, err, out)
	}
	d.Device = strings.TrimSpace(string(out))
	// Registered before the mount: cleanups run last-in first-out, so the disk is unmounted
	// (by the cleanup below, and TempDir's) before the device is detached.
	t.Cleanup(func() {
		if err := detachLoop(d.Device); err != nil {
			t.Errorf("detach %s: %v", d.Device, err)
		}
	})
	// Inode tables and the journal initialised now, not by a kernel thread writing in the
	// background while a test measures the disk.
	args := []string{"-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"}
	if opts.FS == "xfs" {
		args = []string{"-q", "-f", "-n", "ftype=1"}
	}
	args = append(append(args, opts.Mkfs...), d.Device)
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s %v: %v: %s", opts.FS, args, err, out)
	}
	if err := os.MkdirAll(d.Mountpoint, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(d.Device, d.Mountpoint, opts.FS, 0, ""); err != nil {
		t.Fatalf("mount %s (%s) on %s: %v", d.Device, opts.FS, d.Mountpoint, err)
	}
	t.Cleanup(func() {
		if err := UnmountBelow(d.Mountpoint); err != nil {
			t.Errorf("unmount %s: %v", d.Mountpoint, err)
		}
	})
	return d
}

// Sync flushes the disk's filesystem to the device (syncfs) and drops clean page cache, so
// that what follows reads from the device.
func (d *Disk) Sync(t testing.TB) {
	t.Helper()
	fd, err := unix.Open(d.Mountpoint, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatalf("syncfs %s: %v", d.Mountpoint, err)
	}
}

func detachLoop(dev string) error {
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup -d %s: %w: %s", dev, err, out)
	}
	return nil
}

// loopsUnder lists the loop devices whose backing file is under dir.
func loopsUnder(dir string) []string {
	var out []string
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range devs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		back := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if strings.HasPrefix(back, dir+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}
