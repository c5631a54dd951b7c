package monitor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// pidAvailable is the kubelet's pid.available (pidlimit.Stats): MaxPID = min(pid_max,
// threads-max), running tasks from the 4th field of /proc/loadavg ("1/234" → 234). The two
// sysctls are re-read at most every pidMaxTTL (through cache, when not nil); the task count
// every call.
func pidAvailable(root hostfs.Root, buf *[]byte, cache *pidMaxCache, now time.Time) (available, capacity int64, err error) {
	maxPID, err := cache.get(root, buf, now)
	if err != nil {
		return 0, 0, err
	}
	data, err := readProcFile(root.Path("/proc/loadavg"), buf)
	if err != nil {
		return 0, 0, fmt.Errorf("pid.available: %w", err)
	}
	f := strings.Fields(string(data))
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("pid.available: malformed /proc/loadavg %q", data)
	}
	_, tasks, ok := strings.Cut(f[3], "/")
	n, err := strconv.ParseInt(tasks, 10, 64)
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("pid.available: malformed /proc/loadavg field %q", f[3])
	}
	return maxPID - n, maxPID, nil
}

// pidMaxTTL is how long min(pid_max, threads-max) is reused: they are sysctls an operator
// rarely changes, and reading both cost a quarter of a monitoring cycle (BenchmarkCycle).
const pidMaxTTL = time.Minute

// pidMaxCache holds the last min(pid_max, threads-max). A nil cache reads every time.
type pidMaxCache struct {
	value int64
	at    time.Time
}

func (c *pidMaxCache) get(root hostfs.Root, buf *[]byte, now time.Time) (int64, error) {
	if c != nil && c.value > 0 && now.Sub(c.at) >= 0 && now.Sub(c.at) < pidMaxTTL {
		return c.value, nil
	}
	maxPID := int64(-1)
	for _, f := range []string{"/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"} {
		data, err := readProcFile(root.Path(f), buf)
		if err != nil {
			return 0, fmt.Errorf("pid.available: %w", err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid.available: %s: %w", f, err)
		}
		if maxPID < 0 || n < maxPID {
			maxPID = n
		}
	}
	if c != nil {
		c.value, c.at = maxPID, now
	}
	return maxPID, nil
}
