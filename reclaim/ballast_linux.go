package reclaim

import (
	"os"

	"golang.org/x/sys/unix"
)

// preallocate reserves size bytes of real blocks for f (fallocate mode 0).
func preallocate(f *os.File, size int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		if err != unix.EINTR {
			return err
		}
	}
}
