package treecopy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type inoKey struct{ dev, ino uint64 }

// The engine does no more system calls per entry than `cp -a` for the same guarantees
// (hack/bench-migrate.sh counts them): a regular file new at the destination costs lstat,
// two opens, the data (pread/pwrite, or copy_file_range where the kernel copies between the
// two filesystems), flistxattr and futimens on the open descriptors, and two closes; chown
// and chmod only when creation did not already give the wanted owner and mode; SEEK_DATA/
// SEEK_HOLE and ftruncate only for files whose allocation says they have holes; no stat of
// a destination inside a directory the pass created. Descriptors are raw (not *os.File),
// which spares the runtime poller's fcntl/epoll_ctl calls on every open.

type copier struct {
	ctx          context.Context
	opts         Options
	log          *slog.Logger
	stats        Stats
	prog         *progressTracker
	rootDev      uint64
	since        int64 // unix ns; 0: not incremental by ctime
	links        map[inoKey]string
	buf          []byte
	noCFR        bool // copy_file_range unsupported between these filesystems
	prefetch     bool // the source is on a block device: read ahead of the walk (prefetch_linux.go)
	warned       map[string]bool
	euid, egid   uint32
	umask        uint32 // the process's umask; umaskUnknown: always chmod
	umaskUnknown bool
}

// copyBufSize is the pread/pwrite buffer: small enough to stay in the CPU cache between the
// read and the write (larger buffers measured slower on tmpfs), large enough that a big
// file costs few system calls.
const copyBufSize = 256 << 10

func newCopier(ctx context.Context, opts Options) *copier {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &copier{ctx: ctx, opts: opts, log: log, links: map[inoKey]string{}, buf: make([]byte, copyBufSize),
		warned: map[string]bool{}, euid: uint32(os.Geteuid()), egid: uint32(os.Getegid())}
	c.umask, c.umaskUnknown = processUmask()
	return c
}

// processUmask reads the umask from /proc/self/status (Linux ≥ 4.7) instead of setting it
// (umask(2) is process-wide and would race with other goroutines creating files).
func processUmask() (uint32, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return 0, true
			}
			return uint32(m), false
		}
	}
	return 0, true
}

// Copy copies the tree at src into dst (created if missing; its parent must exist),
// preserving everything a container runtime's data root holds (see the note in copy.go). It
// does not descend into filesystems mounted below src (a running container's rootfs mount),
// but creates their mount point directories. With opts.Since or an existing dst it is
// incremental; with opts.Delete it also removes what src no longer has.
func Copy(ctx context.Context, src, dst string, opts Options) (Stats, error) {
	// sendfile is not used: between two filesystems without copy_file_range it moves data
	// through a 64 KiB pipe, measurably slower than pread/pwrite (hack/bench-migrate.sh).
	c := newCopier(ctx, opts)
	if !opts.Since.IsZero() {
		c.since = opts.Since.Add(-CtimeSlack).UnixNano()
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return c.stats, fmt.Errorf("copy: stat source %s: %w", src, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return c.stats, fmt.Errorf("copy: source %s is not a directory", src)
	}
	c.rootDev = st.Dev
	var sfs unix.Statfs_t
	if err := unix.Statfs(src, &sfs); err == nil {
		c.prefetch = sfs.Type != unix.TMPFS_MAGIC && sfs.Type != unix.RAMFS_MAGIC
	}
	start := time.Now()
	c.prog = startProgress(ctx, opts)
	_, err := c.entry(src, dst, &st, false)
	c.prog.finish()
	c.stats.Duration = time.Since(start)
	if err != nil {
		return c.stats, err
	}
	c.log.Info("copy pass done", "src", src, "dst", dst, "files", c.stats.Files, "unchanged", c.stats.Unchanged,
		"dirs", c.stats.Dirs, "hard_links", c.stats.HardLinks, "deleted", c.stats.Deleted, "bytes", c.stats.Bytes,
		"seconds", c.stats.Duration.Seconds(), "rate_bytes_per_second", int64(c.stats.Rate()))
	return c.stats, nil
}

// entry copies one entry. fresh means dst does not exist and its parent is a directory this
// pass created, owned by euid:egid and not set-group-ID, so that what is created in it gets
// euid:egid. changed reports that entries of dst's parent were created or removed (its
// mtime must be set again).
func (c *copier) entry(src, dst string, st *unix.Stat_t, fresh bool) (changed bool, err error) {
	if err := c.ctx.Err(); err != nil {
		return false, err
	}
	// (An unchanged entry other than a directory never gets here: dir skips it.)
	c.prog.entries.Add(1)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return c.dir(src, dst, st, fresh)
	case unix.S_IFREG:
		return c.file(src, dst, st, fresh)
	case unix.S_IFLNK:
		return c.symlink(src, dst, st, fresh)
	default:
		return c.special(src, dst, st, fresh)
	}
}

// trusted: an incremental pass (Since) need not look at the destination of an entry whose
// status has not changed since the pass that began at Since copied it (ctime < Since: no
// write, chmod, chown, xattr, link or unlink since; a directory: no entry added or removed).
// Verify compares both sides afterwards.
func (c *copier) trusted(st *unix.Stat_t, fresh bool) bool {
	return c.since != 0 && !fresh && st.Ctim.Nano() < c.since
}

// unchanged counts and leaves alone an entry other than a directory that the pass trusts.
// Its destination path (dir/name) is only built for an inode with other names, which later
// names link to: most entries of a delta pass are unchanged, and a path each is an
// allocation each.
func (c *copier) unchanged(st *unix.Stat_t, fresh bool, dir, name string) bool {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR || !c.trusted(st, fresh) {
		return false
	}
	c.prog.entries.Add(1)
	c.stats.Unchanged++
	if st.Nlink > 1 {
		c.firstLink(st, filepath.Join(dir, name))
	}
	return true
}

// dstStat lstats dst; ok is false when it does not exist.
func dstStat(dst string) (unix.Stat_t, bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(dst, &st)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("copy: stat %s: %w", dst, err)
	}
	return st, true, nil
}

// sameMeta: type, mode, owner, size and mtime equal, and (incremental by ctime) src unchanged
// since the last pass started.
func (c *copier) sameMeta(s, d *unix.Stat_t) bool {
	if s.Mode != d.Mode || s.Uid != d.Uid || s.Gid != d.Gid || s.Size != d.Size || s.Mtim != d.Mtim {
		return false
	}
	if c.since != 0 && s.Ctim.Nano() >= c.since {
		return false
	}
	return true
}

func removeAny(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("copy: remove %s: %w", p, err)
	}
	return nil
}

// created is what the creation of a destination entry already set, so that meta skips what
// is already right.
type created struct {
	existed bool   // dst existed before (an incremental pass): xattrs it has may need removing
	ownerOK bool   // dst already has the source's owner
	perm    uint32 // the permission bits it was created with (valid when !existed)
}

// newEntry describes an entry this pass has just created with mode perm (before the umask).
func (c *copier) newEntry(st *unix.Stat_t, fresh bool, perm uint32) created {
	return created{ownerOK: fresh && st.Uid == c.euid && st.Gid == c.egid, perm: perm &^ c.umask}
}

// needChmod: the created permission bits are not the source's (set-id bits are always set
// after chown, which clears them).
func (c *copier) needChmod(st *unix.Stat_t, cr created) bool {
	return cr.existed || c.umaskUnknown || cr.perm != st.Mode&0o7777
}

func (c *copier) dir(src, dst string, st *unix.Stat_t, fresh bool) (bool, error) {
	var d unix.Stat_t
	exists, changed := false, false
	trusted := c.trusted(st, fresh)
	if trusted {
		exists = true
	} else if !fresh {
		var err error
		if d, exists, err = dstStat(dst); err != nil {
			return false, err
		}
		if exists && d.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := removeAny(dst); err != nil {
				return false, err
			}
			exists, changed = false, true
		}
	}
	// Created 0700 and opened up last: nobody else enters it while it is incomplete.
	cr := created{existed: true}
	childFresh := false
	if !exists {
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return false, fmt.Errorf("copy: mkdir %s: %w", dst, err)
		}
		changed = true
		cr = c.newEntry(st, fresh, 0o700)
		childFresh = fresh
		if !fresh {
			// In a directory this pass did not create, a set-group-ID parent or a grpid mount
			// decides the group: look.
			var nd unix.Stat_t
			if err := unix.Lstat(dst, &nd); err != nil {
				return false, fmt.Errorf("copy: stat %s: %w", dst, err)
			}
			childFresh = nd.Uid == c.euid && nd.Gid == c.egid && nd.Mode&unix.S_ISGID == 0
			cr.ownerOK = nd.Uid == st.Uid && nd.Gid == st.Gid
			cr.perm = nd.Mode & 0o7777
		}
	}
	c.stats.Dirs++
	dirty := false // entries of dst created or removed
	// A filesystem mounted below the root (a running container's rootfs, an shm tmpfs) is
	// not part of the data: keep the mount point, not its contents.
	if st.Dev == c.rootDev {
		sdir, err := openDir(unix.AT_FDCWD, src)
		if err != nil {
			return false, fmt.Errorf("copy: read directory %s: %w", src, err)
		}
		defer sdir.Close()
		names, err := sdir.Readdirnames(-1)
		if err != nil {
			return false, fmt.Errorf("copy: read directory %s: %w", src, err)
		}
		slices.Sort(names)
		sfd := int(sdir.Fd())
		var pf *prefetcher
		if c.prefetch && len(names) > 1 {
			pf = startPrefetch(sfd, names, childFresh)
			defer pf.close() // before sdir.Close (deferred earlier)
		}
		// A directory the pass trusts lists the names it had when the last pass (which
		// deleted what was gone) read it: nothing to delete.
		if c.opts.Delete && exists && !trusted {
			have, err := readNames(dst)
			if err != nil {
				return false, fmt.Errorf("copy: read directory %s: %w", dst, err)
			}
			for _, n := range have {
				if _, found := slices.BinarySearch(names, n); !found {
					if err := removeAny(filepath.Join(dst, n)); err != nil {
						return false, err
					}
					c.stats.Deleted++
					dirty = true
				}
			}
		}
		for i, n := range names {
			if pf != nil {
				pf.at(i)
			}
			var cst unix.Stat_t
			if err := unix.Fstatat(sfd, n, &cst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) { // removed while we copy (pre-copy): the delta pass sees it
					continue
				}
				return false, fmt.Errorf("copy: stat %s: %w", filepath.Join(src, n), err)
			}
			if c.unchanged(&cst, childFresh, dst, n) {
				continue
			}
			ch, err := c.entry(filepath.Join(src, n), filepath.Join(dst, n), &cst, childFresh)
			if err != nil {
				return false, err
			}
			dirty = dirty || ch
		}
	}
	// Metadata last: creating the children changed the directory's mtime. A directory the
	// pass found as it should be, and left alone, keeps it.
	if exists && !dirty && (trusted || c.sameMeta(st, &d)) {
		c.stats.Unchanged++
		return changed, nil
	}
	return changed, c.meta(src, dst, st, false, cr)
}

// openDir opens the directory name (relative to dirfd) for reading, not following a symlink,
// as an *os.File that is not registered with the runtime's poller (no fcntl/epoll_ctl
// calls); its Fd serves the *at system calls on its entries.
func openDir(dirfd int, name string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// atRef names an entry for the *at system calls: the descriptor of its directory and its
// name there (AT_FDCWD and the path for a tree's root), and its directory's path, from which
// path() builds its own for messages and the calls that have no *at form — only when needed:
// most entries of a walk need none.
type atRef struct {
	dirfd     int
	dir, name string
}

func pathRef(p string) atRef { return atRef{dirfd: unix.AT_FDCWD, name: p} }

func (r atRef) path() string {
	if r.dir == "" {
		return r.name
	}
	return filepath.Join(r.dir, r.name)
}

func (r atRef) lstat(st *unix.Stat_t) error {
	return unix.Fstatat(r.dirfd, r.name, st, unix.AT_SYMLINK_NOFOLLOW)
}

func (r atRef) xattrs() (map[string][]byte, error) {
	return xattrsOf(func(b []byte) (int, error) { return listxattrAt(r, b) },
		func(name string, b []byte) (int, error) { return unix.Lgetxattr(r.path(), name, b) })
}

// noListxattrat: the kernel (before 6.13) or a seccomp filter does not offer listxattrat.
var noListxattrat atomic.Bool

// listxattrAt is listxattrat(2) (Linux 6.13) on r, which spares the path lookup, else
// llistxattr on r's path.
func listxattrAt(r atRef, b []byte) (int, error) {
	if !noListxattrat.Load() {
		name, err := unix.BytePtrFromString(r.name)
		if err != nil {
			return 0, err
		}
		var bp unsafe.Pointer
		if len(b) > 0 {
			bp = unsafe.Pointer(&b[0])
		}
		n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(r.dirfd), uintptr(unsafe.Pointer(name)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(bp), uintptr(len(b)), 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.ENOSYS, unix.EPERM:
			noListxattrat.Store(true)
		default:
			return 0, errno
		}
	}
	return unix.Llistxattr(r.path(), b)
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names) // deterministic order; the cost is small next to the copy
	return names, err
}

// hardLink links dst to the first copy of st's inode, if there is one.
func (c *copier) hardLink(st *unix.Stat_t, dst string, fresh bool) (done, changed bool, err error) {
	if st.Nlink < 2 {
		return false, false, nil
	}
	k := inoKey{st.Dev, st.Ino}
	first, ok := c.links[k]
	if !ok {
		return false, false, nil
	}
	if !fresh {
		var f, d unix.Stat_t
		if err := unix.Lstat(dst, &d); err == nil {
			if err := unix.Lstat(first, &f); err != nil {
				return false, false, fmt.Errorf("copy: stat %s: %w", first, err)
			}
			if d.Ino == f.Ino && d.Dev == f.Dev {
				c.stats.HardLinks++
				return true, false, nil
			}
			if err := removeAny(dst); err != nil {
				return false, false, err
			}
		}
	}
	if err := unix.Link(first, dst); err != nil {
		return false, false, fmt.Errorf("copy: link %s to %s: %w", dst, first, err)
	}
	c.stats.HardLinks++
	return true, true, nil
}

// firstLink remembers dst, which exists now, as the copy of st's inode that later names of
// it link to.
func (c *copier) firstLink(st *unix.Stat_t, dst string) {
	if st.Nlink > 1 {
		c.links[inoKey{st.Dev, st.Ino}] = dst
	}
}

// openNoatime opens a source file without updating its atime (the owner or CAP_FOWNER may).
func openNoatime(p string) (int, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// keepOrClear decides about an existing destination of a regular file or special entry (none
// when fresh): one with src's metadata (and device numbers: 0 for non-devices) is kept,
// counted unchanged with its hard-link group noted; another is unlinked rather than truncated
// — it may be hard-linked to another name — to be written afresh (cleared).
func (c *copier) keepOrClear(st *unix.Stat_t, dst string, fresh bool) (kept, cleared bool, err error) {
	if fresh {
		return false, false, nil
	}
	d, exists, err := dstStat(dst)
	if err != nil || !exists {
		return false, false, err
	}
	if d.Rdev == st.Rdev && c.sameMeta(st, &d) {
		c.stats.Unchanged++
		c.firstLink(st, dst)
		return true, false, nil
	}
	if err := removeAny(dst); err != nil {
		return false, false, err
	}
	return false, true, nil
}

func (c *copier) file(src, dst string, st *unix.Stat_t, fresh bool) (bool, error) {
	if done, changed, err := c.hardLink(st, dst, fresh); done || err != nil {
		return changed, err
	}
	kept, changed, err := c.keepOrClear(st, dst, fresh)
	if kept || err != nil {
		return false, err
	}
	sfd, err := openNoatime(src)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		return changed, nil // removed or replaced while the runtime runs; the delta pass handles it
	}
	if err != nil {
		return changed, fmt.Errorf("copy: open %s: %w", src, err)
	}
	defer unix.Close(sfd)
	perm := st.Mode & 0o777
	dfd, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, perm)
	if err != nil {
		return changed, fmt.Errorf("copy: create %s: %w", dst, err)
	}
	c.firstLink(st, dst)
	cr := c.newEntry(st, fresh, perm)
	// The size at lstat: a file that grows or shrinks during the pre-copy has a new mtime
	// and ctime, and the delta pass copies it again.
	if err := c.dataFd(sfd, dfd, st.Size, st.Blocks); err != nil {
		unix.Close(dfd)
		return true, fmt.Errorf("copy: %s → %s: %w", src, dst, err)
	}
	c.stats.Files++
	err = c.metaFd(sfd, dfd, dst, st, cr)
	if cerr := unix.Close(dfd); err == nil && cerr != nil {
		err = fmt.Errorf("copy: close %s: %w", dst, cerr)
	}
	return true, err
}

// data copies size bytes of sf to df (SampleRate uses it).
func (c *copier) data(sf, df *os.File, size int64) error {
	return c.dataFd(int(sf.Fd()), int(df.Fd()), size, 0)
}

// dataFd copies the data of sfd to the empty dfd: linearly when the file is fully allocated
// (blocks·512 ≥ size, as cp decides), else extent by extent (SEEK_DATA/SEEK_HOLE) so that
// holes stay holes; then the size is set if the file ends in a hole.
func (c *copier) dataFd(sfd, dfd int, size, blocks int64) error {
	if size == 0 {
		return nil
	}
	if blocks*512 >= size {
		// A source that shrank meanwhile (pre-copy) ends early; the delta pass fixes it.
		_, err := c.extent(sfd, dfd, 0, size)
		return err
	}
	end := int64(0)
	for off := int64(0); off < size; {
		start, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		stop := size
		if err != nil {
			start = off // SEEK_DATA unsupported: copy everything
		} else if h, err := unix.Seek(sfd, start, unix.SEEK_HOLE); err == nil && h < size {
			stop = h
		}
		if start >= size {
			break
		}
		if end, err = c.extent(sfd, dfd, start, stop-start); err != nil {
			return err
		}
		off = stop
	}
	if end < size {
		if err := unix.Ftruncate(dfd, size); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	return nil
}

// extent copies n bytes at off and returns the offset it reached: copy_file_range (in-kernel,
// reflinks where the filesystems can) until the kernel refuses it between these filesystems,
// then pread/pwrite.
func (c *copier) extent(sfd, dfd int, off, n int64) (int64, error) {
	for n > 0 {
		if err := c.ctx.Err(); err != nil {
			return off, err
		}
		var w int
		var err error
		if !c.noCFR {
			so, do := off, off
			w, err = unix.CopyFileRange(sfd, &so, dfd, &do, int(min(n, 64<<20)), 0)
			if err != nil && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
				c.noCFR = true
				continue
			}
		} else {
			r, rerr := unix.Pread(sfd, c.buf[:min(n, int64(len(c.buf)))], off)
			if errors.Is(rerr, unix.EINTR) {
				continue
			}
			if rerr != nil {
				return off, fmt.Errorf("read: %w", rerr)
			}
			if r == 0 {
				return off, nil
			}
			w, err = writeFull(dfd, c.buf[:r], off)
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return off, err
		}
		if w == 0 { // the source shrank while we copy (pre-copy); the delta pass fixes it
			return off, nil
		}
		off += int64(w)
		n -= int64(w)
		c.stats.Bytes += int64(w)
		c.prog.bytes.Add(int64(w))
	}
	return off, nil
}

// writeFull writes all of b at off.
func writeFull(fd int, b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		w, err := unix.Pwrite(fd, b[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("write: %w", err)
		}
		if w == 0 {
			return done, fmt.Errorf("write: %w", io.ErrShortWrite)
		}
		done += w
	}
	return done, nil
}

func (c *copier) symlink(src, dst string, st *unix.Stat_t, fresh bool) (bool, error) {
	target, err := os.Readlink(src)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("copy: readlink %s: %w", src, err)
	}
	if !fresh {
		d, exists, err := dstStat(dst)
		if err != nil {
			return false, err
		}
		if exists && d.Mode&unix.S_IFMT == unix.S_IFLNK {
			if cur, err := os.Readlink(dst); err == nil && cur == target && c.sameMeta(st, &d) {
				c.stats.Unchanged++
				return false, nil
			}
		}
		if exists {
			if err := removeAny(dst); err != nil {
				return false, err
			}
		}
	}
	if err := os.Symlink(target, dst); err != nil {
		return true, fmt.Errorf("copy: symlink %s: %w", dst, err)
	}
	c.stats.Symlinks++
	return true, c.meta(src, dst, st, true, c.newEntry(st, fresh, 0o777))
}

func (c *copier) special(src, dst string, st *unix.Stat_t, fresh bool) (bool, error) {
	if done, changed, err := c.hardLink(st, dst, fresh); done || err != nil {
		return changed, err
	}
	kept, changed, err := c.keepOrClear(st, dst, fresh)
	if kept || err != nil {
		return false, err
	}
	// Devices, fifos, sockets and overlay whiteouts (character device 0:0).
	perm := st.Mode & 0o777
	if err := unix.Mknod(dst, st.Mode&unix.S_IFMT|perm, int(st.Rdev)); err != nil {
		return changed, fmt.Errorf("copy: mknod %s: %w", dst, err)
	}
	c.firstLink(st, dst)
	c.stats.Specials++
	return true, c.meta(src, dst, st, false, c.newEntry(st, fresh, perm))
}

// meta applies owner, mode, xattrs and timestamps by path, in that order: chown clears set-id
// bits, and setting xattrs changes ctime but not mtime.
func (c *copier) meta(src, dst string, st *unix.Stat_t, isLink bool, cr created) error {
	if !cr.ownerOK {
		if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("copy: chown %s: %w", dst, err)
		}
	}
	if !isLink && c.needChmod(st, cr) {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("copy: chmod %s: %w", dst, err)
		}
	}
	want, err := readXattrs(src)
	if err != nil {
		return fmt.Errorf("copy: xattrs of %s: %w", src, err)
	}
	var have map[string][]byte
	if cr.existed {
		if have, err = readXattrs(dst); err != nil {
			return fmt.Errorf("copy: xattrs of %s: %w", dst, err)
		}
	}
	if err := c.setXattrs(dst, have, want, func(name string) error { return unix.Lremovexattr(dst, name) },
		func(name string, val []byte) error { return unix.Lsetxattr(dst, name, val, 0) }); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy: set times of %s: %w", dst, err)
	}
	return nil
}

// metaFd is meta for a regular file new at the destination, on the open descriptors.
func (c *copier) metaFd(sfd, dfd int, dst string, st *unix.Stat_t, cr created) error {
	if !cr.ownerOK {
		if err := unix.Fchown(dfd, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("copy: chown %s: %w", dst, err)
		}
	}
	if c.needChmod(st, cr) {
		if err := unix.Fchmod(dfd, st.Mode&0o7777); err != nil {
			return fmt.Errorf("copy: chmod %s: %w", dst, err)
		}
	}
	want, err := xattrsOf(func(b []byte) (int, error) { return unix.Flistxattr(sfd, b) },
		func(name string, b []byte) (int, error) { return unix.Fgetxattr(sfd, name, b) })
	if err != nil {
		return fmt.Errorf("copy: xattrs of %s: %w", dst, err)
	}
	if err := c.setXattrs(dst, nil, want, nil, func(name string, val []byte) error { return unix.Fsetxattr(dfd, name, val, 0) }); err != nil {
		return err
	}
	ts := [2]unix.Timespec{st.Atim, st.Mtim}
	// futimens(fd, ts): utimensat with a NULL path.
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(dfd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return fmt.Errorf("copy: set times of %s: %w", dst, errno)
	}
	return nil
}

// setXattrs makes dst's xattrs (have, if it existed) equal to want.
func (c *copier) setXattrs(dst string, have, want map[string][]byte, remove func(string) error, set func(string, []byte) error) error {
	for name := range have {
		if _, ok := want[name]; !ok {
			if err := remove(name); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("copy: remove xattr %s of %s: %w", name, dst, err)
			}
		}
	}
	for name, val := range want {
		if err := set(name, val); err != nil {
			// A security label the target filesystem cannot hold is not runtime data.
			if strings.HasPrefix(name, "security.") && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM)) {
				if !c.warned[name] {
					c.warned[name] = true
					c.log.Warn("target filesystem does not keep this xattr; skipped", "xattr", name, "path", dst, "err", err)
				}
				continue
			}
			return fmt.Errorf("copy: set xattr %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

// readXattrs returns every extended attribute of p (not following a symlink).
func readXattrs(p string) (map[string][]byte, error) {
	return xattrsOf(func(b []byte) (int, error) { return unix.Llistxattr(p, b) },
		func(name string, b []byte) (int, error) { return unix.Lgetxattr(p, name, b) })
}

// xattrsOf reads every extended attribute through list and get: one list call when there is
// none (the common case), which is all cp does too.
func xattrsOf(list func([]byte) (int, error), get func(string, []byte) (int, error)) (map[string][]byte, error) {
	var small [256]byte
	buf := small[:]
	var n int
	for {
		var err error
		n, err = list(buf)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if errors.Is(err, unix.ERANGE) {
			sz, err := list(nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz*2+1)
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if n == 0 {
		return nil, nil
	}
	out := map[string][]byte{}
	for name := range strings.SplitSeq(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		for {
			n, err := get(name, val)
			if errors.Is(err, unix.ERANGE) {
				sz, err2 := get(name, nil)
				if err2 != nil {
					return nil, err2
				}
				val = make([]byte, sz+1)
				continue
			}
			if errors.Is(err, unix.ENODATA) {
				val = nil
				break
			}
			if err != nil {
				return nil, fmt.Errorf("get %s: %w", name, err)
			}
			val = val[:n]
			break
		}
		if val != nil {
			out[name] = val
		}
	}
	return out, nil
}

// Verify compares dst with src entry by entry: type, mode, owner, size, mtime (not of
// directories' atime), symlink targets, device numbers, xattrs, the hard-link structure,
// and with opts.Checksums the contents. Filesystems mounted below src are skipped as Copy
// skips them. It returns ErrTreesDiffer with the first differences. opts.Live and
// opts.VerifiedSince split the work between a pass while the runtime runs and a short one
// once it is stopped (see VerifyOptions).
func Verify(ctx context.Context, src, dst string, opts VerifyOptions) (VerifyStats, error) {
	if opts.MaxDifferences <= 0 {
		opts.MaxDifferences = 20
	}
	v := &verifier{ctx: ctx, opts: opts, groups: map[inoKey]inoKey{}, sem: make(chan struct{}, verifyWorkers())}
	if !opts.CopiedSince.IsZero() {
		v.copiedSince = opts.CopiedSince.Add(-CtimeSlack).UnixNano()
	}
	if !opts.VerifiedSince.IsZero() {
		if opts.Live {
			return VerifyStats{}, errors.New("verify: a live verification cannot build on another")
		}
		if opts.CopiedSince.IsZero() {
			return VerifyStats{}, errors.New("verify: VerifiedSince needs CopiedSince")
		}
		v.verifiedSince = opts.VerifiedSince.Add(-CtimeSlack).UnixNano()
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return v.stats, fmt.Errorf("verify: %w", err)
	}
	v.rootDev = st.Dev
	var rs VerifyStats
	v.sem <- struct{}{} // this goroutine is a walker too, until its part is done
	err := v.walk(pathRef(src), pathRef(dst), "", false, &rs)
	<-v.sem
	v.wg.Wait()
	v.merge(&rs, err)
	v.stats.Checksums = opts.Checksums
	if v.err != nil {
		return v.stats, v.err
	}
	if len(v.diffs) > 0 {
		what := ""
		if opts.Live {
			what = " in entries unchanged since the copy began (a fault of the copy, not of the running source)"
		}
		return v.stats, fmt.Errorf("%w%s: %d difference(s): %s", ErrTreesDiffer, what, len(v.diffs), strings.Join(v.diffs, "; "))
	}
	return v.stats, nil
}

// verifyWorkers is how many directories Verify walks at once: the verification runs
// while the runtime is stopped, and on a node with idle cores walking both trees is faster in
// parallel. Small and bounded: the walk is system calls, and the node has other work.
func verifyWorkers() int { return min(max(runtime.GOMAXPROCS(0), 1), 4) }

// verifier walks the two trees; a directory is handed to another goroutine while one of the
// sem slots (one per running walker) is free. Each walker counts into its own VerifyStats, merged at the end; the
// rest of the state is under mu.
type verifier struct {
	ctx           context.Context
	opts          VerifyOptions
	rootDev       uint64
	copiedSince   int64 // unix ns, slack applied; 0: none
	verifiedSince int64 // unix ns, slack applied; 0: none
	sem           chan struct{}
	wg            sync.WaitGroup

	mu     sync.Mutex
	stats  VerifyStats
	groups map[inoKey]inoKey // src inode -> dst inode
	diffs  []string
	err    error // the first error of a walker
}

func (v *verifier) diff(rel, format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.diffs) < v.opts.MaxDifferences {
		if rel == "" {
			rel = "."
		}
		v.diffs = append(v.diffs, rel+": "+fmt.Sprintf(format, args...))
	}
}

// done: enough differences found, or a walker failed.
func (v *verifier) done() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.diffs) >= v.opts.MaxDifferences || v.err != nil
}

func (v *verifier) merge(st *VerifyStats, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stats.Entries += st.Entries
	v.stats.Files += st.Files
	v.stats.Bytes += st.Bytes
	v.stats.HardLinks += st.HardLinks
	v.stats.Xattrs += st.Xattrs
	v.stats.Changed += st.Changed
	v.stats.StatOnly += st.StatOnly
	if err != nil && v.err == nil {
		v.err = err
	}
}

// child walks one entry of a directory: a directory in another goroutine if a slot is free
// (by path: the parent closes its descriptors when its own walk is done).
func (v *verifier) child(src, dst atRef, rel string, isDir, loose bool, st *VerifyStats) error {
	if isDir {
		select {
		case v.sem <- struct{}{}:
			v.wg.Go(func() {
				defer func() { <-v.sem }()
				var ls VerifyStats
				err := v.walk(pathRef(src.path()), pathRef(dst.path()), rel, loose, &ls)
				v.merge(&ls, err)
			})
			return nil
		default:
		}
	}
	return v.walk(src, dst, rel, loose, st)
}

// vanished: in a Live verification, an entry of the running source removed during the walk
// is a change, not an error.
func (v *verifier) vanished(err error) bool {
	return v.opts.Live && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR))
}

// walk compares one entry and, for a directory, what it holds. loose (Live only): the parent
// directory changed since the copy began, so this entry may be missing from the copy.
func (v *verifier) walk(sr, dr atRef, rel string, loose bool, st *VerifyStats) error {
	if err := v.ctx.Err(); err != nil {
		return err
	}
	if v.done() {
		return nil
	}
	var s, d unix.Stat_t
	if err := sr.lstat(&s); err != nil {
		if v.vanished(err) {
			st.Changed++
			return nil
		}
		return fmt.Errorf("verify: %w", &os.PathError{Op: "lstat", Path: sr.path(), Err: err})
	}
	// changed: the source entry changed after the copy pass began.
	changed := v.copiedSince != 0 && s.Ctim.Nano() >= v.copiedSince
	if err := dr.lstat(&d); err != nil {
		if v.opts.Live && (changed || loose) {
			st.Changed++
			return nil
		}
		// A missing destination entry is a finding for the report, not a failure of the walk.
		v.diff(rel, "missing at the destination: %v", err)
		return nil //nolint:nilerr // recorded as a difference above
	}
	st.Entries++
	typ := s.Mode & unix.S_IFMT
	if v.opts.Live && changed {
		// Its copy is out of date or about to be: the final verification compares it. What a
		// changed directory holds may still be unchanged, and is compared.
		st.Changed++
		if typ == unix.S_IFDIR && d.Mode&unix.S_IFMT == unix.S_IFDIR && s.Dev == v.rootDev {
			return v.dir(sr, dr, rel, true, true, st)
		}
		return nil
	}
	// full: compare everything; otherwise a Live pass compared what only a ctime change can
	// change, and neither side's ctime moved since.
	full := v.verifiedSince == 0 || changed || d.Ctim.Nano() >= v.verifiedSince
	if !full {
		st.StatOnly++
	}
	switch {
	case typ != d.Mode&unix.S_IFMT:
		v.diff(rel, "type %o, copy has %o", typ, d.Mode&unix.S_IFMT)
		return nil
	case s.Uid != d.Uid || s.Gid != d.Gid:
		v.diff(rel, "owner %d:%d, copy has %d:%d", s.Uid, s.Gid, d.Uid, d.Gid)
	case typ != unix.S_IFLNK && s.Mode != d.Mode:
		v.diff(rel, "mode %o, copy has %o", s.Mode, d.Mode)
	case typ == unix.S_IFREG && s.Size != d.Size:
		v.diff(rel, "size %d, copy has %d", s.Size, d.Size)
	case (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && s.Rdev != d.Rdev:
		v.diff(rel, "device %d, copy has %d", s.Rdev, d.Rdev)
	case s.Mtim != d.Mtim && (typ != unix.S_IFDIR || s.Dev == v.rootDev):
		v.diff(rel, "mtime %d, copy has %d", s.Mtim.Nano(), d.Mtim.Nano())
	}
	if full {
		if err := v.xattrs(sr, dr, rel, st); err != nil {
			if v.vanished(err) {
				st.Changed++
				return nil
			}
			return err
		}
	}
	if typ != unix.S_IFDIR && s.Nlink > 1 {
		k, dk := inoKey{s.Dev, s.Ino}, inoKey{d.Dev, d.Ino}
		v.mu.Lock()
		prev, seen := v.groups[k]
		if !seen {
			v.groups[k] = dk
		}
		v.mu.Unlock()
		if seen {
			st.HardLinks++
			if prev != dk {
				v.diff(rel, "hard link to another name is not a hard link in the copy")
			}
		}
		if d.Nlink != s.Nlink {
			v.diff(rel, "link count %d, copy has %d", s.Nlink, d.Nlink)
		}
	}
	switch typ {
	case unix.S_IFLNK:
		if full {
			a, err := os.Readlink(sr.path())
			if v.vanished(err) {
				st.Changed++
				return nil
			}
			b, _ := os.Readlink(dr.path())
			if a != b {
				v.diff(rel, "symlink target %q, copy has %q", a, b)
			}
		}
	case unix.S_IFREG:
		st.Files++
		st.Bytes += s.Size
		if full && v.opts.Checksums && s.Size == d.Size {
			a, err := fileSHA256(sr.path())
			if v.vanished(err) {
				st.Changed++
				return nil
			}
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			b, err := fileSHA256(dr.path())
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			if a != b {
				v.diff(rel, "content differs")
			}
		}
	case unix.S_IFDIR:
		if s.Dev != v.rootDev {
			return nil
		}
		return v.dir(sr, dr, rel, full, false, st)
	}
	return nil
}

// xattrs compares the extended attributes of both sides.
func (v *verifier) xattrs(sr, dr atRef, rel string, st *VerifyStats) error {
	sx, err := sr.xattrs()
	if err != nil {
		return fmt.Errorf("verify: xattrs of %s: %w", sr.path(), err)
	}
	dx, err := dr.xattrs()
	if err != nil {
		return fmt.Errorf("verify: xattrs of %s: %w", dr.path(), err)
	}
	for name, val := range sx {
		st.Xattrs++
		if got, ok := dx[name]; !ok || !bytes.Equal(got, val) {
			if _, ok := dx[name]; !ok && strings.HasPrefix(name, "security.") {
				continue // Copy skips labels the target cannot hold
			}
			v.diff(rel, "xattr %s differs", name)
		}
	}
	for name := range dx {
		if _, ok := sx[name]; !ok {
			v.diff(rel, "copy has extra xattr %s", name)
		}
	}
	return nil
}

// dir walks what directory sr holds against dr. list compares the names on both sides (a
// directory changed on neither side since a Live pass compared them needs only the
// source's, to walk on); loose (Live) tolerates names on one side only, as the directory
// changed since the copy began.
func (v *verifier) dir(sr, dr atRef, rel string, list, loose bool, st *VerifyStats) error {
	sdir, err := openDir(sr.dirfd, sr.name)
	if err != nil {
		if v.vanished(err) {
			return nil
		}
		return fmt.Errorf("verify: %s: %w", sr.path(), err)
	}
	defer sdir.Close()
	se, err := sdir.ReadDir(-1) // getdents' d_type says which are directories
	if err != nil {
		if v.vanished(err) {
			return nil
		}
		return fmt.Errorf("verify: %s: %w", sr.path(), err)
	}
	slices.SortFunc(se, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	ddir, err := openDir(dr.dirfd, dr.name)
	if err != nil {
		return fmt.Errorf("verify: %s: %w", dr.path(), err)
	}
	defer ddir.Close()
	if list {
		dn, err := ddir.Readdirnames(-1)
		if err != nil {
			return fmt.Errorf("verify: %s: %w", dr.path(), err)
		}
		for _, n := range dn {
			if _, found := slices.BinarySearchFunc(se, n, func(e os.DirEntry, n string) int { return strings.Compare(e.Name(), n) }); !found {
				if loose {
					st.Changed++
					continue
				}
				v.diff(path(rel, n), "only in the copy")
			}
		}
	}
	sfd, dfd := int(sdir.Fd()), int(ddir.Fd())
	sp, dp := sr.path(), dr.path()
	for _, e := range se {
		n := e.Name()
		if err := v.child(atRef{sfd, sp, n}, atRef{dfd, dp, n}, path(rel, n), e.IsDir(), loose, st); err != nil {
			return err
		}
	}
	return nil
}

func path(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DiskUsage measures the tree at root (hard links once, mounts below it skipped).
func DiskUsage(ctx context.Context, root string) (Usage, error) {
	var u Usage
	var rst unix.Stat_t
	if err := unix.Lstat(root, &rst); err != nil {
		return u, fmt.Errorf("measure %s: %w", root, err)
	}
	seen := map[inoKey]bool{}
	var walk func(p string, st *unix.Stat_t) error
	walk = func(p string, st *unix.Stat_t) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := inoKey{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		u.Inodes++
		u.Bytes += st.Blocks * 512
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			u.Apparent += st.Size
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Dev != rst.Dev {
			return nil
		}
		names, err := readNames(p)
		if err != nil {
			return fmt.Errorf("measure %s: %w", p, err)
		}
		for _, n := range names {
			var cst unix.Stat_t
			cp := filepath.Join(p, n)
			if err := unix.Lstat(cp, &cst); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return fmt.Errorf("measure %s: %w", cp, err)
			}
			if err := walk(cp, &cst); err != nil {
				return err
			}
		}
		return nil
	}
	return u, walk(root, &rst)
}

// DigestOptions tunes Digest.
type DigestOptions struct {
	// Mtime includes modification times of non-directories.
	Mtime bool
	// Skip leaves out a relative path (and, for a directory, everything below it).
	Skip func(rel string) bool
	// Lines, if set, receives the digested line of every entry (to show what differs).
	Lines io.Writer
}

// Digest is a SHA-256 over every entry below root: path, type, mode, owner, size, device,
// symlink target, xattrs, content and hard-link structure. Two trees with the same digest
// hold the same data. Tests use it to prove that a migration, resume or rollback lost nothing.
func Digest(ctx context.Context, root string, opts DigestOptions) (string, error) {
	var h io.Writer = sha256.New()
	hasher := h.(interface{ Sum([]byte) []byte })
	if opts.Lines != nil {
		h = io.MultiWriter(h, opts.Lines)
	}
	groups := map[inoKey]int{}
	var walk func(p, rel string) error
	walk = func(p, rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rel != "" && opts.Skip != nil && opts.Skip(rel) {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("digest: %w", err)
		}
		typ := st.Mode & unix.S_IFMT
		fmt.Fprintf(h, "%q %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		if typ == unix.S_IFCHR || typ == unix.S_IFBLK {
			fmt.Fprintf(h, " rdev=%d", st.Rdev)
		}
		if opts.Mtime && typ != unix.S_IFDIR {
			fmt.Fprintf(h, " mtime=%d", st.Mtim.Nano())
		}
		if typ != unix.S_IFDIR && st.Nlink > 1 {
			k := inoKey{st.Dev, st.Ino}
			g, ok := groups[k]
			if !ok {
				g = len(groups)
				groups[k] = g
			}
			fmt.Fprintf(h, " link=%d", g)
		}
		xs, err := readXattrs(p)
		if err != nil {
			return fmt.Errorf("digest: xattrs of %s: %w", p, err)
		}
		names := make([]string, 0, len(xs))
		for n := range xs {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(h, " %s=%x", n, sha256.Sum256(xs[n]))
		}
		switch typ {
		case unix.S_IFLNK:
			t, _ := os.Readlink(p)
			fmt.Fprintf(h, " -> %q", t)
		case unix.S_IFREG:
			sum, err := fileSHA256(p)
			if err != nil {
				return fmt.Errorf("digest: %w", err)
			}
			fmt.Fprintf(h, " size=%d sha256=%s", st.Size, sum)
		}
		_, _ = h.Write([]byte{'\n'})
		if typ != unix.S_IFDIR {
			return nil
		}
		ns, err := readNames(p)
		if err != nil {
			return fmt.Errorf("digest: %w", err)
		}
		for _, n := range ns {
			if err := walk(filepath.Join(p, n), path(rel, n)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return "", err
	}
	return hex.EncodeToString(hasher.Sum(nil)), nil
}

// SampleRate copies up to 64 MiB of the largest files near the top of from into a scratch
// directory on the target and returns the rate (0 when there is nothing to sample).
func SampleRate(ctx context.Context, from, targetDir string) float64 {
	var files []string
	var total int64
	_ = filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil || total >= 64<<20 || len(files) > 2000 {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil && info.Size() > 0 {
				files = append(files, p)
				total += info.Size()
			}
		}
		return nil
	})
	if total < 1<<20 {
		return 0
	}
	tmp, err := os.MkdirTemp(targetDir, ".evictguard-rate-")
	if err != nil {
		return 0
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	var bytes int64
	c := &copier{ctx: ctx, log: slog.New(slog.DiscardHandler), links: map[inoKey]string{}, buf: make([]byte, 1<<20), warned: map[string]bool{}, prog: &progressTracker{}}
	for i, f := range files {
		sf, err := os.Open(f)
		if err != nil {
			continue
		}
		df, err := os.Create(filepath.Join(tmp, fmt.Sprint(i)))
		if err != nil {
			sf.Close()
			continue
		}
		st, _ := sf.Stat()
		if st != nil && c.data(sf, df, st.Size()) == nil {
			bytes += st.Size()
		}
		_ = df.Sync()
		sf.Close()
		df.Close()
	}
	el := time.Since(start)
	if el <= 0 {
		return 0
	}
	return float64(bytes) / el.Seconds()
}
