package treecopy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/treecopy/treecopytest"
)

func TestCopyTreePreservesEverything(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	dst := filepath.Join(t.TempDir(), "dst")
	if err := os.Mkdir(src, 0o711); err != nil {
		t.Fatal(err)
	}
	treecopytest.RuntimeLikeTree(t, src)
	before, err := Digest(ctx, src, DigestOptions{Mtime: true})
	if err != nil {
		t.Fatal(err)
	}
	var progress []Progress
	stats, err := Copy(ctx, src, dst, Options{Progress: func(p Progress) { progress = append(progress, p) }, ProgressInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if stats.HardLinks != 2 {
		t.Errorf("hard links: got %d, want 2", stats.HardLinks)
	}
	if len(progress) == 0 || !progress[len(progress)-1].Done || progress[len(progress)-1].Bytes != stats.Bytes {
		t.Errorf("progress: last report %+v, stats %+v", progress, stats)
	}
	if _, err := Verify(ctx, src, dst, VerifyOptions{Checksums: true}); err != nil {
		t.Fatal(err)
	}
	after, err := Digest(ctx, dst, DigestOptions{Mtime: true})
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Errorf("digest of the copy %s differs from the original %s", after, before)
	}
	// Sparse: the hole is not allocated in the copy.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "containers/c1/sparse.img"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 65<<20+4096 || st.Blocks*512 > 4<<20 {
		t.Errorf("sparse copy: size %d, allocated %d bytes", st.Size, st.Blocks*512)
	}
	// Timestamps of a directory and a symlink.
	for _, p := range []string{"image/rel-link", "empty"} {
		if err := unix.Lstat(filepath.Join(dst, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mtim.Nano() != 2_000_000_456 {
			t.Errorf("%s: mtime %d, want 2000000456", p, st.Mtim.Nano())
		}
	}
	// The original is untouched.
	if again, _ := Digest(ctx, src, DigestOptions{Mtime: true}); again != before {
		t.Error("copying changed the source")
	}
}

func TestCopyTreeDeltaPass(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	dst := filepath.Join(t.TempDir(), "dst")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	treecopytest.RuntimeLikeTree(t, src)
	first, err := Copy(ctx, src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the ctime slack
	since := time.Now()
	// Changes while "the runtime runs": new, changed (same size, new mtime), chmod only,
	// xattr only, removed file and directory, a file replaced by a directory, a link broken.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "containers/c1/new"), []byte("new"), 0o644))
	must(os.WriteFile(filepath.Join(src, "containers/c1/c1-json.log"), []byte(strings.Repeat("LOG LINE\n", 1000)), 0o640))
	must(os.Chmod(filepath.Join(src, "image/layers/a/etc/passwd"), 0o600))
	must(unix.Setxattr(filepath.Join(src, "volumes/v1/_data/hello"), "user.evictguard", []byte("new"), 0))
	must(os.RemoveAll(filepath.Join(src, "empty")))
	must(os.Remove(filepath.Join(src, "image/dangling")))
	must(os.Remove(filepath.Join(src, "volumes/passwd.link2")))
	must(os.Mkdir(filepath.Join(src, "volumes/passwd.link2"), 0o755))
	must(os.Remove(filepath.Join(src, "image/layers/a/passwd.link")))
	must(os.WriteFile(filepath.Join(src, "image/layers/a/passwd.link"), []byte("separate now"), 0o644))

	delta, err := Copy(ctx, src, dst, Options{Since: since, Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, src, dst, VerifyOptions{Checksums: true}); err != nil {
		t.Fatal(err)
	}
	if delta.Deleted < 2 {
		t.Errorf("delta deleted %d entries, want ≥ 2", delta.Deleted)
	}
	if delta.Bytes >= first.Bytes/10 {
		t.Errorf("delta copied %d bytes of %d: not incremental", delta.Bytes, first.Bytes)
	}
	if delta.Unchanged == 0 {
		t.Error("delta left nothing alone")
	}
	a, _ := Digest(ctx, src, DigestOptions{Mtime: true})
	b, _ := Digest(ctx, dst, DigestOptions{Mtime: true})
	if a != b {
		t.Error("digests differ after the delta pass")
	}
}

func TestVerifyTreesFindsDifferences(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		mutate func(dst string) error
		want   string
	}{
		{"content", func(d string) error {
			return os.WriteFile(filepath.Join(d, "volumes/v1/_data/hello"), []byte("VOLUME DATA"), 0o600)
		}, "content differs"},
		{"missing", func(d string) error { return os.Remove(filepath.Join(d, "image/dangling")) }, "missing"},
		{"extra", func(d string) error { return os.WriteFile(filepath.Join(d, "extra"), nil, 0o644) }, "only in the copy"},
		{"mode", func(d string) error { return os.Chmod(filepath.Join(d, "volumes/v1/_data"), 0o700) }, "mode"},
		{"xattr", func(d string) error {
			return unix.Removexattr(filepath.Join(d, "volumes/v1/_data/hello"), "user.evictguard")
		}, "xattr"},
		{"hard link", func(d string) error {
			p := filepath.Join(d, "volumes/passwd.link2")
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, b, 0o644)
		}, "link"},
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	treecopytest.RuntimeLikeTree(t, src)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dst")
			if _, err := Copy(ctx, src, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if err := tc.mutate(dst); err != nil {
				t.Fatal(err)
			}
			_, err := Verify(ctx, src, dst, VerifyOptions{Checksums: true})
			if !errors.Is(err, ErrTreesDiffer) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrTreesDiffer mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDiskUsageCountsHardLinksOnce(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "a"), make([]byte, 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "a"), filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	u, err := DiskUsage(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if u.Apparent != 100_000 || u.Inodes != 2 {
		t.Errorf("usage %+v: want apparent 100000 and 2 inodes (dir + file)", u)
	}
}

// TestCopyTreeModesAndOwners covers what the engine skips when creation already set it
// (chmod when the umask kept the mode, chown when the new entry already has the owner) and
// what it must still do: modes the umask strips, set-id and sticky bits, foreign owners, and
// a destination whose parent is set-group-ID (new entries would inherit its group).
func TestCopyTreeModesAndOwners(t *testing.T) {
	type ent struct {
		name     string
		dir      bool
		mode     os.FileMode
		uid, gid int // -1: leave as created
	}
	ents := []ent{
		{"plain", false, 0o644, -1, -1},
		{"private", false, 0o600, -1, -1},
		{"group-writable", false, 0o664, -1, -1}, // the umask (022) strips g+w at creation
		{"world-writable", false, 0o666, -1, -1},
		{"exec", false, 0o755, -1, -1},
		{"none", false, 0, -1, -1},
		{"setuid", false, 0o4755, -1, -1},
		{"setgid", false, 0o2750, -1, -1},
		{"foreign", false, 0o640, 1234, 5678},
		{"foreign-setuid", false, 0o4711, 1234, 5678},
		{"foreign-group", false, 0o644, -1, 5678},
		{"d-plain", true, 0o755, -1, -1},
		{"d-private", true, 0o700, -1, -1},
		{"d-sticky", true, 0o1777, -1, -1},
		{"d-setgid", true, 0o2775, -1, 4242},
		{"d-foreign", true, 0o750, 1234, 5678},
	}
	for _, parentSetgid := range []bool{false, true} {
		t.Run(fmt.Sprintf("parent-setgid=%t", parentSetgid), func(t *testing.T) {
			if os.Geteuid() != 0 && parentSetgid {
				t.Skip("needs root to chown")
			}
			ctx := context.Background()
			src := filepath.Join(t.TempDir(), "src")
			if err := os.Mkdir(src, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if os.Geteuid() != 0 && (e.uid >= 0 || e.gid >= 0) {
					continue
				}
				p := filepath.Join(src, e.name)
				var err error
				if e.dir {
					err = os.Mkdir(p, 0o700)
					if err == nil {
						err = os.WriteFile(filepath.Join(p, "child"), []byte("x"), 0o644)
					}
				} else {
					err = os.WriteFile(p, []byte(e.name), 0o600)
				}
				if err == nil && (e.uid >= 0 || e.gid >= 0) {
					err = os.Lchown(p, e.uid, e.gid)
				}
				if err == nil {
					err = unix.Chmod(p, uint32(e.mode.Perm())|modeBits(e.mode))
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			parent := t.TempDir()
			if parentSetgid {
				if err := os.Chown(parent, 0, 4343); err != nil {
					t.Fatal(err)
				}
				if err := unix.Chmod(parent, 0o2755); err != nil {
					t.Fatal(err)
				}
			}
			dst := filepath.Join(parent, "dst")
			if _, err := Copy(ctx, src, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(ctx, src, dst, VerifyOptions{Checksums: true}); err != nil {
				t.Fatal(err)
			}
			a, _ := Digest(ctx, src, DigestOptions{Mtime: true})
			b, _ := Digest(ctx, dst, DigestOptions{Mtime: true})
			if a != b {
				t.Error("digests differ")
			}
		})
	}
}

// modeBits converts the set-id and sticky bits of an os.FileMode to chmod(2) bits.
func modeBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// TestCopyTreeSparseShapes: a file's holes stay holes whether it starts, ends or is nothing
// but a hole, and a fully allocated file is copied whole.
func TestCopyTreeSparseShapes(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		size       int64
		data       []int64 // offsets of 4 KiB data blocks
		maxAlloced int64
	}{
		{"dense", 3 * mib, nil, -1},
		{"trailing hole", 8 * mib, []int64{0}, mib},
		{"leading hole", 8 * mib, []int64{8*mib - 4096}, mib},
		{"only a hole", 64 * mib, []int64{}, mib},
		{"holes between", 32 * mib, []int64{0, 16 * mib, 32*mib - 4096}, mib},
	}
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		f, err := os.Create(filepath.Join(src, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if tc.data == nil {
			_, err = f.Write(bytes.Repeat([]byte("d"), int(tc.size)))
		} else {
			err = f.Truncate(tc.size)
			for _, off := range tc.data {
				if err == nil {
					_, err = f.WriteAt(bytes.Repeat([]byte("s"), 4096), off)
				}
			}
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Copy(ctx, src, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, src, dst, VerifyOptions{Checksums: true}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(dst, tc.name), &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != tc.size {
				t.Errorf("size %d, want %d", st.Size, tc.size)
			}
			if tc.maxAlloced >= 0 && st.Blocks*512 > tc.maxAlloced {
				t.Errorf("%d bytes allocated, want at most %d (holes filled)", st.Blocks*512, tc.maxAlloced)
			}
		})
	}
}

// TestVerifyTreesParallel: directories are verified by several walkers at once (on more than
// one CPU); the counts add up and differences are found wherever they are, including a hard
// link between two directories that different walkers see.
func TestVerifyTreesParallel(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	const dirs, files = 40, 5
	for i := range dirs {
		d := filepath.Join(src, fmt.Sprintf("d%02d", i), "sub")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range files {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", j)), []byte(d), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Link(filepath.Join(src, "d00/sub/f0"), filepath.Join(src, "d39/sub/link")); err != nil {
		t.Fatal(err)
	}
	// root + per dir: d, sub, files; + the link
	wantEntries := int64(1 + dirs*(2+files) + 1)
	tests := []struct {
		name   string
		mutate func(dst string) error
		want   string // "" : identical
	}{
		{"identical", func(string) error { return nil }, ""},
		{"deep content", func(d string) error {
			return os.WriteFile(filepath.Join(d, "d27/sub/f3"), []byte("changed!"), 0o644)
		}, "d27/sub/f3: size"},
		{"cross-directory hard link", func(d string) error {
			p := filepath.Join(d, "d39/sub/link")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, []byte(filepath.Join(src, "d00/sub")), 0o644)
		}, "link"},
		{"extra deep", func(d string) error { return os.WriteFile(filepath.Join(d, "d13/sub/extra"), nil, 0o644) }, "d13/sub/extra: only in the copy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dst")
			if _, err := Copy(ctx, src, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if err := tc.mutate(dst); err != nil {
				t.Fatal(err)
			}
			st, err := Verify(ctx, src, dst, VerifyOptions{Checksums: true})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if st.Entries != wantEntries || st.Files != dirs*files+1 || st.HardLinks != 1 {
					t.Errorf("stats %+v: want %d entries, %d files, 1 hard link", st, wantEntries, dirs*files+1)
				}
				return
			}
			if !errors.Is(err, ErrTreesDiffer) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrTreesDiffer mentioning %q", err, tc.want)
			}
		})
	}
}

// TestCopyTreeDeltaTrustsUnchanged: a delta pass does not look at the destination of what did
// not change at the source since the pre-copy began (that is what makes it short); a
// destination changed behind its back is Verify' to find.
func TestCopyTreeDeltaTrustsUnchanged(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	dst := filepath.Join(t.TempDir(), "dst")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	treecopytest.RuntimeLikeTree(t, src)
	time.Sleep(1100 * time.Millisecond) // the source's ctimes before the pre-copy, past the slack
	since := time.Now()
	if _, err := Copy(ctx, src, dst, Options{Delete: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "containers/c1/new"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dst, "volumes/v1/_data/hello"), 0o666); err != nil { // behind its back
		t.Fatal(err)
	}
	delta, err := Copy(ctx, src, dst, Options{Since: since, Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if delta.Files != 1 || delta.Unchanged == 0 {
		t.Errorf("delta %+v: want the new file copied and the rest left alone", delta)
	}
	if _, err := os.Stat(filepath.Join(dst, "containers/c1/new")); err != nil {
		t.Error(err)
	}
	_, err = Verify(ctx, src, dst, VerifyOptions{})
	if !errors.Is(err, ErrTreesDiffer) || !strings.Contains(err.Error(), "volumes/v1/_data/hello: mode") {
		t.Errorf("verify: %v, want the mode changed at the destination", err)
	}
}

// TestAtRefXattrs: an entry's xattrs read relative to its directory (listxattrat where the
// kernel has it) and by path (the fallback) are the same, for a file and a symlink.
func TestAtRefXattrs(t *testing.T) {
	dir := t.TempDir()
	file, link := filepath.Join(dir, "f"), filepath.Join(dir, "l")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", link); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(file, "user.a", []byte("1"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	if err := unix.Setxattr(file, "user.b", bytes.Repeat([]byte("v"), 1000), 0); err != nil {
		t.Fatal(err)
	}
	d, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	was := noListxattrat.Load()
	t.Cleanup(func() { noListxattrat.Store(was) })
	for _, fallback := range []bool{false, true} {
		for _, name := range []string{"f", "l"} {
			t.Run(fmt.Sprintf("%s/fallback=%t", name, fallback), func(t *testing.T) {
				noListxattrat.Store(fallback)
				p := filepath.Join(dir, name)
				got, err := atRef{int(d.Fd()), dir, name}.xattrs()
				if err != nil {
					t.Fatal(err)
				}
				want, err := readXattrs(p)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) || (name == "f" && len(got) != 2) || (name == "l" && len(got) != 0) {
					t.Errorf("got %v, want %v", got, want)
				}
			})
		}
	}
}
