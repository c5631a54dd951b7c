package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Leftovers lists processes and mounts that belong to a harness run directory.
type Leftovers struct {
	PIDs   []int
	Mounts []string
	// Loops are loop devices attached to images under the run directory (LoopDisk).
	Loops []string
}

// Empty reports whether nothing was left behind.
func (l Leftovers) Empty() bool { return len(l.PIDs) == 0 && len(l.Mounts) == 0 && len(l.Loops) == 0 }

func (l Leftovers) String() string {
	var b strings.Builder
	for _, pid := range l.PIDs {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		fmt.Fprintf(&b, "process %d: %s\n", pid, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "))
	}
	for _, m := range l.Mounts {
		fmt.Fprintf(&b, "mount %s\n", m)
	}
	for _, d := range l.Loops {
		fmt.Fprintf(&b, "loop device %s\n", d)
	}
	return b.String()
}

// FindLeftovers reports what this test binary's harness left behind: live processes it
// started, processes whose command line or working directory lies under RunDir, and mounts
// under RunDir.
func FindLeftovers() (Leftovers, error) {
	pidsMu.Lock()
	tracked := append([]int(nil), allPIDs...)
	pidsMu.Unlock()
	return findUnder(RunDir(), tracked)
}

// FindAllLeftovers is FindLeftovers for every run directory (for use after all test
// binaries have finished, e.g. by hack/test.sh).
func FindAllLeftovers() (Leftovers, error) { return findUnder(BaseDir, nil) }

func findUnder(dir string, tracked []int) (Leftovers, error) {
	var l Leftovers
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return l, err
	}
	isTracked := map[int]bool{}
	for _, p := range tracked {
		isTracked[p] = true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 || isZombieOrGone(pid) {
			continue
		}
		if isTracked[pid] || under(pid, dir) {
			l.PIDs = append(l.PIDs, pid)
		}
	}
	l.Loops = loopsUnder(dir)
	l.Mounts, err = Mounts(dir)
	return l, err
}

// Processes returns the PIDs of the processes whose command line (argv) match accepts.
func Processes(match func(pid int, argv []string) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(pid, strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombieOrGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

func under(pid int, dir string) bool {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err == nil && strings.Contains(string(cmd), dir+"/") {
		return true
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	return err == nil && strings.HasPrefix(cwd, dir+"/")
}

// SweepStale cleans the run directories of test binaries that are no longer running (an
// interrupted earlier run): it kills their processes, unmounts deepest first and removes the
// directories. It never touches the run directory of a live test binary.
func SweepStale() (Leftovers, error) {
	var all Leftovers
	entries, err := os.ReadDir(BaseDir)
	if errors.Is(err, os.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return all, err
	}
	var errs []error
	for _, e := range entries {
		pidStr, ok := strings.CutPrefix(e.Name(), "run-")
		pid, convErr := strconv.Atoi(pidStr)
		if !ok || convErr != nil {
			continue // not a run directory: shared bookkeeping such as hostpaths/
		}
		if pid != os.Getpid() && !isZombieOrGone(pid) {
			continue // a live test binary owns it
		}
		l, err := sweepDir(filepath.Join(BaseDir, e.Name()))
		all.PIDs = append(all.PIDs, l.PIDs...)
		all.Mounts = append(all.Mounts, l.Mounts...)
		all.Loops = append(all.Loops, l.Loops...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return all, errors.Join(errs...)
}

// SweepRun cleans this test binary's run directory (end of TestMain).
func SweepRun() (Leftovers, error) { return sweepDir(RunDir()) }

func sweepDir(dir string) (Leftovers, error) {
	l, err := findUnder(dir, nil)
	if err != nil {
		return l, err
	}
	for _, pid := range l.PIDs {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range l.PIDs {
		for !isZombieOrGone(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	var errs []error
	if err := UnmountBelow(dir); err != nil {
		errs = append(errs, err)
	}
	for _, dev := range l.Loops {
		if err := detachLoop(dev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return l, errors.Join(errs...)
}
