package monitor

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// memoryAvailable approximates the kubelet's memory.available from /proc/meminfo:
// capacity = MemTotal; the kubelet's available = capacity − working set, working set =
// root-cgroup usage − inactive_file; with usage ≈ MemTotal − MemFree that is
// MemFree + Inactive(file). (The kubelet reads the root cgroup; this is within page cache
// noise of it, and is not MemAvailable, which is more generous.)
func memoryAvailable(root hostfs.Root, buf *[]byte) (available, capacity int64, err error) {
	data, err := readProcFile(root.Path("/proc/meminfo"), buf)
	if err != nil {
		return 0, 0, fmt.Errorf("memory.available: %w", err)
	}
	var total, free, inactiveFile int64 = -1, -1, -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		switch k {
		case "MemTotal":
			total = n
		case "MemFree":
			free = n
		case "Inactive(file)":
			inactiveFile = n
		}
	}
	if total < 0 || free < 0 || inactiveFile < 0 {
		return 0, 0, fmt.Errorf("memory.available: %s lacks MemTotal, MemFree or Inactive(file)", root.Path("/proc/meminfo"))
	}
	return free + inactiveFile, total, nil
}

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
