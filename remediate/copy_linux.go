package remediate

import (
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
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type inoKey struct{ dev, ino uint64 }

type copier struct {
	ctx     context.Context
	opts    CopyOptions
	log     *slog.Logger
	stats   CopyStats
	prog    *progressTracker
	rootDev uint64
	since   int64 // unix ns; 0: not incremental by ctime
	links   map[inoKey]string
	buf     []byte
	noCFR   bool // copy_file_range unsupported between these filesystems
	noSF    bool // sendfile unsupported or not used
	warned  map[string]bool
}

// CopyTree copies the tree at src into dst (created if missing; its parent must exist),
// preserving everything a container runtime's data root holds (see the note in copy.go). It
// does not descend into filesystems mounted below src (a running container's rootfs mount),
// but creates their mount point directories. With opts.Since or an existing dst it is
// incremental; with opts.Delete it also removes what src no longer has.
func CopyTree(ctx context.Context, src, dst string, opts CopyOptions) (CopyStats, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// sendfile is not used: between two filesystems without copy_file_range it moves data
	// through a 64 KiB pipe, measurably slower than pread/pwrite with a 1 MiB buffer
	// (hack/bench-migrate.sh).
	c := &copier{ctx: ctx, opts: opts, log: log, links: map[inoKey]string{}, buf: make([]byte, 1<<20), warned: map[string]bool{}, noSF: true}
	if !opts.Since.IsZero() {
		// ctime comes from a coarse clock: allow a second of slack.
		c.since = opts.Since.Add(-time.Second).UnixNano()
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return c.stats, fmt.Errorf("copy: stat source %s: %w", src, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return c.stats, fmt.Errorf("copy: source %s is not a directory", src)
	}
	c.rootDev = st.Dev
	start := time.Now()
	c.prog = startProgress(ctx, opts)
	err := c.entry(src, dst, &st)
	c.prog.finish()
	c.stats.Duration = time.Since(start)
	if err != nil {
		return c.stats, err
	}
	log.Info("copy pass done", "src", src, "dst", dst, "files", c.stats.Files, "unchanged", c.stats.Unchanged,
		"dirs", c.stats.Dirs, "hard_links", c.stats.HardLinks, "deleted", c.stats.Deleted, "bytes", c.stats.Bytes,
		"seconds", c.stats.Duration.Seconds(), "rate_bytes_per_second", int64(c.stats.Rate()))
	return c.stats, nil
}

func (c *copier) entry(src, dst string, st *unix.Stat_t) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	c.prog.entries.Add(1)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return c.dir(src, dst, st)
	case unix.S_IFREG:
		return c.file(src, dst, st)
	case unix.S_IFLNK:
		return c.symlink(src, dst, st)
	default:
		return c.special(src, dst, st)
	}
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

func (c *copier) dir(src, dst string, st *unix.Stat_t) error {
	d, exists, err := dstStat(dst)
	if err != nil {
		return err
	}
	if exists && d.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := removeAny(dst); err != nil {
			return err
		}
		exists = false
	}
	if !exists {
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return fmt.Errorf("copy: mkdir %s: %w", dst, err)
		}
	}
	c.stats.Dirs++
	// A filesystem mounted below the root (a running container's rootfs, an shm tmpfs) is
	// not part of the data: keep the mount point, not its contents.
	if st.Dev == c.rootDev {
		names, err := readNames(src)
		if err != nil {
			return fmt.Errorf("copy: read directory %s: %w", src, err)
		}
		if c.opts.Delete && exists {
			have, err := readNames(dst)
			if err != nil {
				return fmt.Errorf("copy: read directory %s: %w", dst, err)
			}
			want := make(map[string]bool, len(names))
			for _, n := range names {
				want[n] = true
			}
			for _, n := range have {
				if !want[n] {
					if err := removeAny(filepath.Join(dst, n)); err != nil {
						return err
					}
					c.stats.Deleted++
				}
			}
		}
		for _, n := range names {
			sp := filepath.Join(src, n)
			var cst unix.Stat_t
			if err := unix.Lstat(sp, &cst); err != nil {
				if errors.Is(err, unix.ENOENT) { // removed while we copy (pre-copy): the delta pass sees it
					continue
				}
				return fmt.Errorf("copy: stat %s: %w", sp, err)
			}
			if err := c.entry(sp, filepath.Join(dst, n), &cst); err != nil {
				return err
			}
		}
	}
	// Metadata last: creating the children changed the directory's mtime.
	return c.meta(src, dst, st, false, exists)
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

func (c *copier) hardLink(st *unix.Stat_t, dst string) (bool, error) {
	if st.Nlink < 2 {
		return false, nil
	}
	k := inoKey{st.Dev, st.Ino}
	first, ok := c.links[k]
	if !ok {
		return false, nil
	}
	var f, d unix.Stat_t
	if err := unix.Lstat(first, &f); err != nil {
		return false, fmt.Errorf("copy: stat %s: %w", first, err)
	}
	if err := unix.Lstat(dst, &d); err == nil {
		if d.Ino == f.Ino && d.Dev == f.Dev {
			c.stats.HardLinks++
			return true, nil
		}
		if err := removeAny(dst); err != nil {
			return false, err
		}
	}
	if err := unix.Link(first, dst); err != nil {
		return false, fmt.Errorf("copy: link %s to %s: %w", dst, first, err)
	}
	c.stats.HardLinks++
	return true, nil
}

func (c *copier) file(src, dst string, st *unix.Stat_t) error {
	if done, err := c.hardLink(st, dst); done || err != nil {
		return err
	}
	if st.Nlink > 1 {
		c.links[inoKey{st.Dev, st.Ino}] = dst
	}
	d, exists, err := dstStat(dst)
	if err != nil {
		return err
	}
	if exists && c.sameMeta(st, &d) {
		c.stats.Unchanged++
		return nil
	}
	if exists {
		// Unlink rather than truncate: the destination may be hard-linked to another name.
		if err := removeAny(dst); err != nil {
			return err
		}
	}
	sf, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		sf, err = os.Open(src)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil // removed while the runtime runs; the delta pass handles it
	}
	if err != nil {
		return fmt.Errorf("copy: open %s: %w", src, err)
	}
	defer sf.Close()
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy: create %s: %w", dst, err)
	}
	// The size now, not at lstat: a file growing during the pre-copy is caught by the delta.
	var cur unix.Stat_t
	if err := unix.Fstat(int(sf.Fd()), &cur); err != nil {
		df.Close()
		return fmt.Errorf("copy: stat %s: %w", src, err)
	}
	if err := c.data(sf, df, cur.Size); err != nil {
		df.Close()
		return fmt.Errorf("copy: %s → %s: %w", src, dst, err)
	}
	if err := df.Close(); err != nil {
		return fmt.Errorf("copy: close %s: %w", dst, err)
	}
	c.stats.Files++
	return c.meta(src, dst, st, false, false)
}

// data copies the data extents of sf (holes stay holes) and sets the size.
func (c *copier) data(sf, df *os.File, size int64) error {
	sfd, dfd := int(sf.Fd()), int(df.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		end := size
		if err != nil {
			start = off // SEEK_DATA unsupported: copy everything
		} else if h, err := unix.Seek(sfd, start, unix.SEEK_HOLE); err == nil && h < size {
			end = h
		}
		if start >= size {
			break
		}
		if err := c.extent(sfd, dfd, start, end-start); err != nil {
			return err
		}
		off = end
	}
	if err := unix.Ftruncate(dfd, size); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}

// extent copies n bytes at off: copy_file_range (in-kernel, reflinks where the filesystems
// can), else sendfile (when enabled), else pread/pwrite.
func (c *copier) extent(sfd, dfd int, off, n int64) error {
	for n > 0 {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		chunk := min(n, 64<<20)
		var w int
		var err error
		switch {
		case !c.noCFR:
			so, do := off, off
			w, err = unix.CopyFileRange(sfd, &so, dfd, &do, int(chunk), 0)
			if err != nil && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
				c.noCFR = true
				continue
			}
		case !c.noSF:
			if _, err = unix.Seek(dfd, off, io.SeekStart); err != nil {
				return err
			}
			so := off
			w, err = unix.Sendfile(dfd, sfd, &so, int(chunk))
			if err != nil && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)) {
				c.noSF = true
				continue
			}
		default:
			r, rerr := unix.Pread(sfd, c.buf[:min(chunk, int64(len(c.buf)))], off)
			if rerr != nil {
				return fmt.Errorf("read: %w", rerr)
			}
			if r == 0 {
				return nil
			}
			w, err = unix.Pwrite(dfd, c.buf[:r], off)
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if w == 0 { // the source shrank while we copy (pre-copy); the delta pass fixes it
			return nil
		}
		off += int64(w)
		n -= int64(w)
		c.stats.Bytes += int64(w)
		c.prog.bytes.Add(int64(w))
	}
	return nil
}

func (c *copier) symlink(src, dst string, st *unix.Stat_t) error {
	target, err := os.Readlink(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy: readlink %s: %w", src, err)
	}
	d, exists, err := dstStat(dst)
	if err != nil {
		return err
	}
	if exists && d.Mode&unix.S_IFMT == unix.S_IFLNK {
		if cur, err := os.Readlink(dst); err == nil && cur == target && c.sameMeta(st, &d) {
			c.stats.Unchanged++
			return nil
		}
	}
	if exists {
		if err := removeAny(dst); err != nil {
			return err
		}
	}
	if err := os.Symlink(target, dst); err != nil {
		return fmt.Errorf("copy: symlink %s: %w", dst, err)
	}
	c.stats.Symlinks++
	return c.meta(src, dst, st, true, false)
}

func (c *copier) special(src, dst string, st *unix.Stat_t) error {
	if done, err := c.hardLink(st, dst); done || err != nil {
		return err
	}
	if st.Nlink > 1 {
		c.links[inoKey{st.Dev, st.Ino}] = dst
	}
	d, exists, err := dstStat(dst)
	if err != nil {
		return err
	}
	if exists && d.Rdev == st.Rdev && c.sameMeta(st, &d) {
		c.stats.Unchanged++
		return nil
	}
	if exists {
		if err := removeAny(dst); err != nil {
			return err
		}
	}
	// Devices, fifos, sockets and overlay whiteouts (character device 0:0).
	if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
		return fmt.Errorf("copy: mknod %s: %w", dst, err)
	}
	c.stats.Specials++
	return c.meta(src, dst, st, false, false)
}

// meta applies owner, mode, xattrs and timestamps, in that order: chown clears set-id bits,
// and setting xattrs changes ctime but not mtime.
func (c *copier) meta(src, dst string, st *unix.Stat_t, isLink, existed bool) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("copy: chown %s: %w", dst, err)
	}
	if !isLink {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("copy: chmod %s: %w", dst, err)
		}
	}
	if err := c.xattrs(src, dst, existed); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy: set times of %s: %w", dst, err)
	}
	return nil
}

func (c *copier) xattrs(src, dst string, existed bool) error {
	want, err := readXattrs(src)
	if err != nil {
		return fmt.Errorf("copy: xattrs of %s: %w", src, err)
	}
	if existed {
		have, err := readXattrs(dst)
		if err != nil {
			return fmt.Errorf("copy: xattrs of %s: %w", dst, err)
		}
		for name := range have {
			if _, ok := want[name]; !ok {
				if err := unix.Lremovexattr(dst, name); err != nil && !errors.Is(err, unix.ENODATA) {
					return fmt.Errorf("copy: remove xattr %s of %s: %w", name, dst, err)
				}
			}
		}
	}
	for name, val := range want {
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
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
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size*2)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*2)
			continue
		}
		if err != nil {
			return nil, err
		}
		buf = buf[:n]
		break
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(strings.TrimRight(string(buf), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		for {
			n, err := unix.Lgetxattr(p, name, val)
			if errors.Is(err, unix.ERANGE) {
				sz, err2 := unix.Lgetxattr(p, name, nil)
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

// VerifyTrees compares dst with src entry by entry: type, mode, owner, size, mtime (not of
// directories' atime), symlink targets, device numbers, xattrs, the hard-link structure,
// and with opts.Checksums the contents. Filesystems mounted below src are skipped as CopyTree
// skips them. It returns ErrTreesDiffer with the first differences.
func VerifyTrees(ctx context.Context, src, dst string, opts VerifyOptions) (VerifyStats, error) {
	if opts.MaxDifferences <= 0 {
		opts.MaxDifferences = 20
	}
	v := &verifier{ctx: ctx, opts: opts, groups: map[inoKey]inoKey{}}
	v.stats.Checksums = opts.Checksums
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return v.stats, fmt.Errorf("verify: %w", err)
	}
	v.rootDev = st.Dev
	if err := v.walk(src, dst, ""); err != nil {
		return v.stats, err
	}
	if len(v.diffs) > 0 {
		return v.stats, fmt.Errorf("%w: %d difference(s): %s", ErrTreesDiffer, len(v.diffs), strings.Join(v.diffs, "; "))
	}
	return v.stats, nil
}

type verifier struct {
	ctx     context.Context
	opts    VerifyOptions
	stats   VerifyStats
	rootDev uint64
	groups  map[inoKey]inoKey // src inode -> dst inode
	diffs   []string
}

func (v *verifier) diff(rel, format string, args ...any) {
	if len(v.diffs) < v.opts.MaxDifferences {
		if rel == "" {
			rel = "."
		}
		v.diffs = append(v.diffs, rel+": "+fmt.Sprintf(format, args...))
	}
}

func (v *verifier) walk(src, dst, rel string) error {
	if err := v.ctx.Err(); err != nil {
		return err
	}
	if len(v.diffs) >= v.opts.MaxDifferences {
		return nil
	}
	var s, d unix.Stat_t
	if err := unix.Lstat(src, &s); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := unix.Lstat(dst, &d); err != nil {
		// A missing destination entry is a finding for the report, not a failure of the walk.
		v.diff(rel, "missing at the destination: %v", err)
		return nil //nolint:nilerr // recorded as a difference above
	}
	v.stats.Entries++
	typ := s.Mode & unix.S_IFMT
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
	sx, err := readXattrs(src)
	if err != nil {
		return fmt.Errorf("verify: xattrs of %s: %w", src, err)
	}
	dx, err := readXattrs(dst)
	if err != nil {
		return fmt.Errorf("verify: xattrs of %s: %w", dst, err)
	}
	for name, val := range sx {
		v.stats.Xattrs++
		if got, ok := dx[name]; !ok || !bytes.Equal(got, val) {
			if _, ok := dx[name]; !ok && strings.HasPrefix(name, "security.") {
				continue // CopyTree skips labels the target cannot hold
			}
			v.diff(rel, "xattr %s differs", name)
		}
	}
	for name := range dx {
		if _, ok := sx[name]; !ok {
			v.diff(rel, "copy has extra xattr %s", name)
		}
	}
	if typ != unix.S_IFDIR && s.Nlink > 1 {
		k, dk := inoKey{s.Dev, s.Ino}, inoKey{d.Dev, d.Ino}
		if prev, ok := v.groups[k]; ok {
			v.stats.HardLinks++
			if prev != dk {
				v.diff(rel, "hard link to an earlier name is not a hard link in the copy")
			}
		} else {
			v.groups[k] = dk
		}
		if d.Nlink != s.Nlink {
			v.diff(rel, "link count %d, copy has %d", s.Nlink, d.Nlink)
		}
	}
	switch typ {
	case unix.S_IFLNK:
		a, _ := os.Readlink(src)
		b, _ := os.Readlink(dst)
		if a != b {
			v.diff(rel, "symlink target %q, copy has %q", a, b)
		}
	case unix.S_IFREG:
		v.stats.Files++
		v.stats.Bytes += s.Size
		if v.opts.Checksums && s.Size == d.Size {
			a, err := fileSHA256(src)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			b, err := fileSHA256(dst)
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
		sn, err := readNames(src)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		dn, err := readNames(dst)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		for _, n := range dn {
			if _, found := slices.BinarySearch(sn, n); !found {
				v.diff(path(rel, n), "only in the copy")
			}
		}
		for _, n := range sn {
			if err := v.walk(filepath.Join(src, n), filepath.Join(dst, n), path(rel, n)); err != nil {
				return err
			}
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

// DigestOptions tunes TreeDigest.
type DigestOptions struct {
	// Mtime includes modification times of non-directories.
	Mtime bool
	// Skip leaves out a relative path (and, for a directory, everything below it).
	Skip func(rel string) bool
	// Lines, if set, receives the digested line of every entry (to show what differs).
	Lines io.Writer
}

// TreeDigest is a SHA-256 over every entry below root: path, type, mode, owner, size, device,
// symlink target, xattrs, content and hard-link structure. Two trees with the same digest
// hold the same data. Tests use it to prove that a migration, resume or rollback lost nothing.
func TreeDigest(ctx context.Context, root string, opts DigestOptions) (string, error) {
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
