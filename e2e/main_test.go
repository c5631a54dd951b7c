package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestMain sweeps what an interrupted earlier run left behind (never a live run's), runs the tests, and then
// fails the run if any harness process or mount is still there: leaving nothing behind is
// part of what the suite proves.
func TestMain(m *testing.M) {
	if spec := os.Getenv(memoryHogEnv); spec != "" {
		os.Exit(runMemoryHog(spec))
	}
	if os.Geteuid() == 0 {
		if l, err := harness.SweepStale(); err != nil || !l.Empty() {
			fmt.Fprintf(os.Stderr, "e2e: swept leftovers of an earlier run:\n%s%v\n", l, err)
		}
	}
	code := m.Run()
	if builtBin != "" {
		_ = os.RemoveAll(filepath.Dir(builtBin)) // the CLI built by evictguardBinary
	}
	if os.Geteuid() == 0 {
		l, err := harness.FindLeftovers()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: leak check failed: %v\n", err)
			code = 1
		} else if !l.Empty() {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: the suite left these behind:\n%s", l)
			code = 1
		} else {
			fmt.Fprintln(os.Stderr, "e2e: leak check: no harness processes or mounts left")
		}
		_, _ = harness.SweepRun()
	}
	os.Exit(code)
}
