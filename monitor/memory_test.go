package monitor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// hostTree writes files (node path → content) under a new directory used as a host root.
func hostTree(t *testing.T, files map[string]string) hostfs.Root {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return hostfs.Root(root)
}

const meminfo = "MemTotal:       1000000 kB\nMemFree:         200000 kB\nInactive(file):  300000 kB\n"

// TestMemoryObserver: the kubelet's memory signals from cgroup files laid out as on v1
// (hybrid included) and v2 nodes. Values are chosen so that every term matters.
func TestMemoryObserver(t *testing.T) {
	const total = 1000000 * 1024
	tests := []struct {
		name                 string
		files                map[string]string
		pods                 string
		wantNode, wantAlloc  int64
		wantAllocCap         int64
		wantNodeErr, wantErr string
	}{{
		name: "cgroup v1: usage_in_bytes − total_inactive_file",
		files: map[string]string{
			"/proc/meminfo": meminfo,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes":          "400000000\n",
			"/sys/fs/cgroup/memory/memory.stat":                    "cache 1\ninactive_file 5\ntotal_inactive_file 100000000\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes":          "9223372036854771712\n",
			"/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes": "150000000\n",
			"/sys/fs/cgroup/memory/kubepods/memory.stat":           "total_inactive_file 50000000\n",
			"/sys/fs/cgroup/memory/kubepods/memory.limit_in_bytes": "800000000\n",
			"/sys/fs/cgroup/unified/cgroup.controllers":            "",
		},
		pods:     "/kubepods",
		wantNode: total - 300000000, wantAlloc: 800000000 - 100000000, wantAllocCap: 800000000,
	}, {
		name: "cgroup v2: the root's anon + file − inactive_file; pods memory.current, memory.max",
		files: map[string]string{
			"/proc/meminfo":                                meminfo,
			"/sys/fs/cgroup/cgroup.controllers":            "cpu memory pids\n",
			"/sys/fs/cgroup/memory.stat":                   "anon 200000000\nfile 300000000\nkernel 99\nactive_file 1\ninactive_file 250000000\n",
			"/sys/fs/cgroup/kubepods.slice/memory.current": "120000000\n",
			"/sys/fs/cgroup/kubepods.slice/memory.stat":    "anon 1\ninactive_file 20000000\n",
			"/sys/fs/cgroup/kubepods.slice/memory.max":     "900000000\n",
		},
		pods:     "/kubepods.slice",
		wantNode: total - 250000000, wantAlloc: 900000000 - 100000000, wantAllocCap: 900000000,
	}, {
		name: "working set never below 0",
		files: map[string]string{
			"/proc/meminfo": meminfo,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes":          "10\n",
			"/sys/fs/cgroup/memory/memory.stat":                    "total_inactive_file 20\n",
			"/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes": "10\n",
			"/sys/fs/cgroup/memory/kubepods/memory.stat":           "total_inactive_file 20\n",
			"/sys/fs/cgroup/memory/kubepods/memory.limit_in_bytes": "1000\n",
		},
		pods:     "/kubepods",
		wantNode: total, wantAlloc: 1000, wantAllocCap: 1000,
	}, {
		name: "v2 pods cgroup without a limit: no observation, as for the kubelet",
		files: map[string]string{
			"/proc/meminfo":                          meminfo,
			"/sys/fs/cgroup/cgroup.controllers":      "memory\n",
			"/sys/fs/cgroup/memory.stat":             "anon 0\nfile 0\ninactive_file 0\n",
			"/sys/fs/cgroup/kubepods/memory.current": "1\n",
			"/sys/fs/cgroup/kubepods/memory.stat":    "inactive_file 0\n",
			"/sys/fs/cgroup/kubepods/memory.max":     "max\n",
		},
		pods:     "/kubepods",
		wantNode: total,
		wantErr:  "has no memory limit",
	}, {
		name: "no pods cgroup: the kubelet is not running",
		files: map[string]string{
			"/proc/meminfo": meminfo,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes": "0\n",
			"/sys/fs/cgroup/memory/memory.stat":           "total_inactive_file 0\n",
		},
		pods:     "/kubepods",
		wantNode: total,
		wantErr:  "kubepods does not exist",
	}, {
		name: "cgroupsPerQOS=false: pods are observed at the root",
		files: map[string]string{
			"/proc/meminfo": meminfo,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes": "1000\n",
			"/sys/fs/cgroup/memory/memory.stat":           "total_inactive_file 0\n",
		},
		pods:     "/",
		wantNode: total - 1000, wantAlloc: total - 1000, wantAllocCap: total,
	}, {
		name: "memory.stat without inactive file",
		files: map[string]string{
			"/proc/meminfo": meminfo,
			"/sys/fs/cgroup/memory/memory.usage_in_bytes": "1000\n",
			"/sys/fs/cgroup/memory/memory.stat":           "cache 0\n",
		},
		pods:        "",
		wantNodeErr: "lacks one of total_inactive_file",
		wantErr:     "pods cgroup is not known",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &memoryObserver{root: hostTree(t, tt.files), pods: tt.pods}
			var buf []byte
			avail, capacity, err := o.nodeAvailable(&buf)
			switch {
			case tt.wantNodeErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantNodeErr) {
					t.Errorf("memory.available error %v, want %q", err, tt.wantNodeErr)
				}
			case err != nil:
				t.Errorf("memory.available: %v", err)
			case avail != tt.wantNode || capacity != total:
				t.Errorf("memory.available = %d of %d, want %d of %d", avail, capacity, tt.wantNode, int64(total))
			}
			avail, capacity, err = o.allocatableAvailable(&buf)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("allocatableMemory.available error %v, want %q", err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("allocatableMemory.available: %v", err)
			case avail != tt.wantAlloc || capacity != tt.wantAllocCap:
				t.Errorf("allocatableMemory.available = %d of %d, want %d of %d", avail, capacity, tt.wantAlloc, tt.wantAllocCap)
			}
		})
	}
}
