package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestInterruptedRunIsCleanedUp kills a test binary (SIGKILL: no cleanup runs) while it holds
// a tmpfs mount and a running child process, then checks that the child died with it
// (PDEATHSIG) and that the next run's SweepStale removes the mount and the run directory.
func TestInterruptedRunIsCleanedUp(t *testing.T) {
	if os.Getenv("EVICTGUARD_INTERRUPT_CHILD") == "1" {
		interruptedChild(t)
		return
	}
	harness.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestInterruptedRunIsCleanedUp$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EVICTGUARD_INTERRUPT_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mount string
	var childPID int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			f := strings.Fields(rest)
			mount = f[0]
			childPID, _ = strconv.Atoi(f[1])
			break
		}
	}
	if mount == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child test binary never reported READY")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// PDEATHSIG: the component the killed binary started must die too.
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(childPID, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(childPID, 0) == nil {
		t.Errorf("process %d outlived the killed test binary", childPID)
		_ = syscall.Kill(childPID, syscall.SIGKILL)
	}
	// Its mount is still there (nothing ran its cleanup) ...
	if mps, _ := harness.Mounts(mount); len(mps) == 0 {
		t.Fatalf("expected the killed binary's tmpfs at %s to be left behind", mount)
	}
	// ... until a later run sweeps stale run directories.
	found, err := harness.SweepStale()
	if err != nil {
		t.Fatalf("SweepStale: %v", err)
	}
	if len(found.Mounts) == 0 {
		t.Errorf("SweepStale found no stale mounts")
	}
	if mps, _ := harness.Mounts(mount); len(mps) != 0 {
		t.Errorf("still mounted after SweepStale: %v", mps)
	}
	runDir := filepath.Dir(mount)
	if _, err := os.Stat(runDir); !os.IsNotExist(err) {
		t.Errorf("stale run directory %s still exists (%v)", runDir, err)
	}
}

func interruptedChild(t *testing.T) {
	dir := harness.TmpFS(t, 1<<20, 0)
	p := harness.Start(t, filepath.Dir(dir), "sleeper", nil, "/bin/sleep", "300")
	fmt.Printf("READY %s %d\n", dir, p.Cmd.Process.Pid)
	time.Sleep(5 * time.Minute)
}
