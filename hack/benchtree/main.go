// Command benchtree writes a tree that looks like a container runtime's overlay2 data root,
// for hack/bench-migrate.sh on real disks: layer directories of small files with a long tail
// of large ones, hard links, symlinks, overlay whiteouts (character devices 0:0), opaque
// directories (trusted.overlay.opaque=y), owners and set-id bits. It is deterministic for a
// seed, so every round and every tool copies the same tree.
//
// Hand-written because no kept tool generates overlay2-shaped trees; fio and the like make
// flat files, not entries.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", "", "directory to create the tree in (created)")
	size := flag.Int64("bytes", 1<<30, "bytes of file data, about")
	entries := flag.Int("entries", 100000, "entries (files, directories, links), about")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "benchtree: -dir is required")
		os.Exit(2)
	}
	if err := build(*dir, *size, *entries, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "benchtree:", err)
		os.Exit(1)
	}
}

func build(root string, size int64, entries int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	write := func(p string, n int64, mode os.FileMode) error {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		off := r.IntN(len(buf))
		for n > 0 {
			chunk := min(n, int64(len(buf)-off))
			if _, err := f.Write(buf[off : off+int(chunk)]); err != nil {
				f.Close()
				return err
			}
			n -= chunk
			off = 0
		}
		if err := f.Chmod(mode); err != nil { // the umask does not apply to set-id bits
			f.Close()
			return err
		}
		return f.Close()
	}
	// Half the bytes in large files (8–64 MiB, a layer's libraries and binaries), the rest in
	// small ones sized to reach the entry count.
	large := size / 2
	layers := 24
	count := 0
	var small []string
	for l := 0; l < layers; l++ {
		diff := filepath.Join(root, "overlay2", fmt.Sprintf("%064x", r.Uint64()), "diff")
		if err := os.MkdirAll(diff, 0o755); err != nil {
			return err
		}
		count += 3
		for large > 0 && r.IntN(2) == 0 {
			n := min(large, int64(8+r.IntN(57))<<20)
			if err := os.MkdirAll(filepath.Join(diff, "usr/bin"), 0o755); err != nil {
				return err
			}
			if err := write(filepath.Join(diff, "usr/bin", fmt.Sprintf("big%d", count)), n, 0o755); err != nil {
				return err
			}
			large -= n
			count++
		}
		small = append(small, diff)
	}
	smallBytes := size - size/2 + large // what large files did not take
	perFile := max(smallBytes/int64(entries), 512)
	for i := 0; count < entries; i++ {
		diff := small[i%len(small)]
		d := filepath.Join(diff, "usr/lib", fmt.Sprintf("d%d", i/500))
		if i%500 < len(small) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			count++
		}
		p := filepath.Join(d, fmt.Sprintf("f%d", i))
		switch {
		case i%200 == 7: // a hard link to the previous file in this directory
			prev := filepath.Join(d, fmt.Sprintf("f%d", i-len(small)))
			if err := os.Link(prev, p); err != nil && !os.IsNotExist(err) {
				return err
			}
		case i%100 == 3:
			if err := os.Symlink(fmt.Sprintf("f%d", i-len(small)), p); err != nil {
				return err
			}
		case i%400 == 11 && i >= len(small): // whiteout: a file deleted in an upper layer
			if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
				return err
			}
		case i%1000 == 13: // an opaque directory replacing a lower one
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			if err := unix.Lsetxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				return err
			}
		default:
			n := perFile/2 + r.Int64N(perFile+1)
			mode := os.FileMode(0o644)
			if i%2000 == 17 {
				mode = 0o4755
			}
			if err := write(p, n, mode); err != nil {
				return err
			}
			if i%50 == 5 {
				if err := os.Lchown(p, 1000, 1000); err != nil {
					return err
				}
			}
		}
		count++
	}
	return nil
}
