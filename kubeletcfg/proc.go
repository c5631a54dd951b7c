package kubeletcfg

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// kubeletProcess is a running kubelet found under /proc.
type kubeletProcess struct {
	pid  int
	argv []string
	cwd  string // node path of its working directory ("" if unknown)
}

// findKubeletProcesses scans /proc/*/cmdline under the host root for processes whose argv[0]
// has the base name "kubelet", lowest PID first. Kernel threads and processes that vanish
// while being read are skipped. It needs the host's PID namespace (hostPID in a DaemonSet).
func findKubeletProcesses(root hostfs.Root) []kubeletProcess {
	ents, err := os.ReadDir(root.Path("/proc"))
	if err != nil {
		return nil
	}
	var out []kubeletProcess
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		data, err := os.ReadFile(root.Path("/proc/" + e.Name() + "/cmdline"))
		if err != nil || len(data) == 0 {
			continue
		}
		argv := strings.Split(string(bytes.TrimRight(data, "\x00")), "\x00")
		if filepath.Base(argv[0]) != "kubelet" {
			continue
		}
		cwd, _ := os.Readlink(root.Path("/proc/" + e.Name() + "/cwd"))
		out = append(out, kubeletProcess{pid: pid, argv: argv, cwd: cwd})
	}
	slices.SortFunc(out, func(a, b kubeletProcess) int { return a.pid - b.pid })
	return out
}

// hostnameOverride is the value of --hostname-override in a kubelet's arguments, "" if none
// (the flag has no KubeletConfiguration field).
func hostnameOverride(args []string) string {
	v := ""
	for i, a := range args {
		a = strings.TrimPrefix(a, "-")
		switch {
		case strings.HasPrefix(a, "-hostname-override="):
			v = strings.TrimPrefix(a, "-hostname-override=")
		case a == "-hostname-override" && i+1 < len(args):
			v = args[i+1]
		}
	}
	return v
}
