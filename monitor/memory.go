package monitor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// The kubelet's memory signals come from cAdvisor's view of two cgroups
// (k/k@v1.37.2:pkg/kubelet/eviction/helpers.go makeSignalObservations):
//
//   - memory.available = machine memory − the root cgroup's working set, capacity = machine
//     memory (cAdvisor's raw handler gives the root cgroup MemTotal as its limit;
//     pkg/kubelet/stats/helper.go: available = limit − working set);
//   - allocatableMemory.available = the pods cgroup's memory limit − its working set,
//     capacity = the limit. The limit is what the kubelet enforces as node allocatable:
//     capacity − systemReserved − kubeReserved (cm/node_container_manager_linux.go); the
//     hard memory.available threshold is then subtracted by the threshold itself. A pods
//     cgroup without a limit gives the kubelet no observation at all.
//
// Working set = usage − inactive file pages, never below 0 (cAdvisor's libcontainer handler).
// Usage is memory.usage_in_bytes on cgroup v1; on v2 memory.current, except for the root
// cgroup, which has none and whose usage runc computes as anon + file from its memory.stat
// (opencontainers/cgroups fs2 rootStatsFromMeminfo).
//
// These few files are read here rather than through opencontainers/cgroups because its
// readers use the fixed paths /sys/fs/cgroup and /proc/meminfo (and decide "root cgroup" by
// comparing with them), so they cannot read a node's cgroups under --host-root, which is how
// the DaemonSet sees them (/host/sys/fs/cgroup).

// memoryUnlimited is where cAdvisor's consumers stop believing a limit (kubelet stats
// isMemoryUnlimited: the kernel rounds "no limit" to a page multiple below 2^63).
const memoryUnlimited = int64(1) << 62

// cgroupRoot is the cgroup filesystem as the node mounts it.
const cgroupRoot = "/sys/fs/cgroup"

// memoryObserver reads memory.available and allocatableMemory.available. Step serialises it.
type memoryObserver struct {
	root hostfs.Root
	// pods is the kubelet's pods cgroup inside a hierarchy ("/kubepods"); "" when unknown.
	pods string
	// version is decided on first use: 1 = cgroup v1 (or hybrid), 2 = unified.
	version int
}

// cgroupMemory is one cgroup's memory as cAdvisor reports it.
type cgroupMemory struct {
	usage, inactiveFile, workingSet int64
	// limit is the memory limit; ≥ memoryUnlimited when there is none.
	limit int64
}

func (o *memoryObserver) cgroupVersion() int {
	if o.version == 0 {
		// The unified hierarchy's root has cgroup.controllers; v1 and hybrid layouts mount a
		// tmpfs there (this is also how runc's IsCgroup2UnifiedMode answers, by fs magic).
		if _, err := os.Stat(o.root.Path(cgroupRoot + "/cgroup.controllers")); err == nil {
			o.version = 2
		} else {
			o.version = 1
		}
	}
	return o.version
}

// memoryDir is the directory of a cgroup (a path inside the hierarchy) on the node.
func (o *memoryObserver) memoryDir(cgroup string) string {
	if o.cgroupVersion() == 2 {
		return o.root.Path(path.Join(cgroupRoot, cgroup))
	}
	return o.root.Path(path.Join(cgroupRoot, "memory", cgroup))
}

// nodeAvailable is the kubelet's memory.available and its capacity.
func (o *memoryObserver) nodeAvailable(buf *[]byte) (available, capacity int64, err error) {
	total, err := memTotal(o.root, buf)
	if err != nil {
		return 0, 0, err
	}
	m, err := o.read("/", buf)
	if err != nil {
		return 0, 0, err
	}
	return max(total-m.workingSet, 0), total, nil
}

// allocatableAvailable is the kubelet's allocatableMemory.available and its capacity (the
// pods cgroup's limit).
func (o *memoryObserver) allocatableAvailable(buf *[]byte) (available, capacity int64, err error) {
	if o.pods == "" {
		return 0, 0, errors.New("the kubelet's pods cgroup is not known")
	}
	if o.pods == "/" {
		// cgroupsPerQOS=false: the kubelet's pods "cgroup" is the root, limited by machine memory.
		return o.nodeAvailable(buf)
	}
	m, err := o.read(o.pods, buf)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("the kubelet's pods cgroup %s does not exist (%w); is the kubelet running?", o.memoryDir(o.pods), err)
	}
	if err != nil {
		return 0, 0, err
	}
	if m.limit >= memoryUnlimited {
		return 0, 0, fmt.Errorf("the pods cgroup %s has no memory limit (node allocatable is not enforced), so the kubelet does not observe this signal either", o.memoryDir(o.pods))
	}
	return max(m.limit-m.workingSet, 0), m.limit, nil
}

// read returns a cgroup's usage, working set and limit.
func (o *memoryObserver) read(cgroup string, buf *[]byte) (cgroupMemory, error) {
	dir := o.memoryDir(cgroup)
	v2 := o.cgroupVersion() == 2
	stat, err := readProcFile(dir+"/memory.stat", buf)
	if err != nil {
		return cgroupMemory{}, err
	}
	inactiveKey := "total_inactive_file"
	if v2 {
		inactiveKey = "inactive_file"
	}
	keys := []string{inactiveKey}
	rootV2 := v2 && cgroup == "/"
	if rootV2 {
		keys = append(keys, "anon", "file")
	}
	vals, err := statValues(stat, keys...)
	if err != nil {
		return cgroupMemory{}, fmt.Errorf("%s/memory.stat: %w", dir, err)
	}
	m := cgroupMemory{inactiveFile: vals[0], limit: memoryUnlimited}
	switch {
	case rootV2:
		m.usage = vals[1] + vals[2]
	case v2:
		if m.usage, err = readInt(dir+"/memory.current", buf); err != nil {
			return cgroupMemory{}, err
		}
		if m.limit, err = readInt(dir+"/memory.max", buf); err != nil {
			return cgroupMemory{}, err
		}
	default:
		if m.usage, err = readInt(dir+"/memory.usage_in_bytes", buf); err != nil {
			return cgroupMemory{}, err
		}
		if cgroup != "/" {
			if m.limit, err = readInt(dir+"/memory.limit_in_bytes", buf); err != nil {
				return cgroupMemory{}, err
			}
		}
	}
	m.workingSet = max(m.usage-m.inactiveFile, 0)
	return m, nil
}

// statValues finds "key value" lines of a memory.stat in the order of keys.
func statValues(data []byte, keys ...string) ([]int64, error) {
	out := make([]int64, len(keys))
	found := 0
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		for i, want := range keys {
			if string(k) == want {
				n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", want, err)
				}
				out[i] = n
				found++
			}
		}
	}
	if found < len(keys) {
		return nil, fmt.Errorf("lacks one of %s", strings.Join(keys, ", "))
	}
	return out, nil
}

// readInt reads a cgroup file holding one number, or "max" (no limit).
func readInt(file string, buf *[]byte) (int64, error) {
	b, err := readProcFile(file, buf)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return memoryUnlimited, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	if n >= uint64(memoryUnlimited) {
		return memoryUnlimited, nil
	}
	return int64(n), nil
}

// memTotal is the machine's memory as cAdvisor reads it (MemTotal in /proc/meminfo).
func memTotal(root hostfs.Root, buf *[]byte) (int64, error) {
	data, err := readProcFile(root.Path("/proc/meminfo"), buf)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: MemTotal: %w", root.Path("/proc/meminfo"), err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s lacks MemTotal", root.Path("/proc/meminfo"))
}
