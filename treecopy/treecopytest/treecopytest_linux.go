// Package treecopytest builds the trees the copy engine's tests and the migration's tests
// copy: every kind of entry a container runtime's data root holds. It writes only under the
// directories it is given.
package treecopytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RuntimeLikeTree writes a tree with every kind of entry a runtime root holds. As root
// it adds what needs privileges: device nodes, whiteouts, trusted.overlay xattrs, foreign
// owners.
func RuntimeLikeTree(t testing.TB, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"image/layers/a/etc", "volumes/v1/_data", "containers/c1", "empty", "ro"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(root, "image/layers/a/etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "volumes/v1/_data/hello"), []byte("volume data"), 0o600))
	must(os.WriteFile(filepath.Join(root, "containers/c1/c1-json.log"), []byte(strings.Repeat("log line\n", 1000)), 0o640))
	must(os.Chmod(filepath.Join(root, "containers/c1/c1-json.log"), 0o4750)) // set-id bits survive chown ordering
	// Hard links: three names, one inode.
	must(os.Link(filepath.Join(root, "image/layers/a/etc/passwd"), filepath.Join(root, "image/layers/a/passwd.link")))
	must(os.Link(filepath.Join(root, "image/layers/a/etc/passwd"), filepath.Join(root, "volumes/passwd.link2")))
	// A sparse file: 1 MiB of data, a 64 MiB hole, 4 KiB of data.
	sp := filepath.Join(root, "containers/c1/sparse.img")
	f, err := os.Create(sp)
	must(err)
	_, err = f.Write(make([]byte, 1<<20))
	must(err)
	_, err = f.WriteAt([]byte(strings.Repeat("x", 4096)), 65<<20)
	must(err)
	must(f.Close())
	// Symlinks, relative and dangling.
	must(os.Symlink("../volumes/v1/_data/hello", filepath.Join(root, "image/rel-link")))
	must(os.Symlink("/nonexistent/target", filepath.Join(root, "image/dangling")))
	must(unix.Mkfifo(filepath.Join(root, "containers/c1/fifo"), 0o620))
	must(unix.Setxattr(filepath.Join(root, "volumes/v1/_data/hello"), "user.evictguard", []byte("kept"), 0))
	must(os.Chmod(filepath.Join(root, "ro"), 0o500))
	if os.Geteuid() == 0 {
		must(unix.Mknod(filepath.Join(root, "image/layers/a/whiteout"), unix.S_IFCHR, int(unix.Mkdev(0, 0))))
		must(unix.Mknod(filepath.Join(root, "image/layers/a/etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Setxattr(filepath.Join(root, "image/layers/a/etc"), "trusted.overlay.opaque", []byte("y"), 0))
		must(unix.Lsetxattr(filepath.Join(root, "image/rel-link"), "trusted.overlay.redirect", []byte("/x"), 0))
		must(os.Lchown(filepath.Join(root, "volumes/v1/_data/hello"), 1234, 5678))
		must(os.Lchown(filepath.Join(root, "image/dangling"), 42, 43))
	}
	// Timestamps in the past, on files, directories and symlinks.
	old := []unix.Timespec{unix.NsecToTimespec(1_000_000_123), unix.NsecToTimespec(2_000_000_456)}
	for _, p := range []string{"image/rel-link", "image/layers/a/etc", "volumes/v1/_data/hello", "empty"} {
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, p), old, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// TreePairs builds n runtime-like source trees under one temporary directory and returns their
// paths and a destination path for each, once settle has passed (callers that compare
// ctimes with a slack pass the slack, so that every stamp is older than it).
func TreePairs(t testing.TB, n int, settle time.Duration) (srcs, dsts []string) {
	t.Helper()
	base := t.TempDir()
	for i := range n {
		src, dst := filepath.Join(base, fmt.Sprintf("src%d", i)), filepath.Join(base, fmt.Sprintf("dst%d", i))
		if err := os.Mkdir(src, 0o755); err != nil {
			t.Fatal(err)
		}
		RuntimeLikeTree(t, src)
		srcs, dsts = append(srcs, src), append(dsts, dst)
	}
	time.Sleep(settle)
	return srcs, dsts
}
