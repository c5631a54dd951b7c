package monitor

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// readProcFile reads a small file (a /proc or /proc/sys entry) into buf, growing it as
// needed, with plain open/read/close. os.ReadFile also fstats the file and tries to register
// it with the poller; for /proc files read every cycle that costs more than the read itself
// (measured with BenchmarkCycle: memory.available and pid.available were two thirds of a
// cycle). The result aliases *buf and is valid until the next call with the same buffer.
func readProcFile(path string, buf *[]byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if cap(*buf) < 4096 {
		*buf = make([]byte, 0, 4096)
	}
	b := (*buf)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			*buf = b
			return b, nil
		}
		b = b[:len(b)+n]
	}
}
