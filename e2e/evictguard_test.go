package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// evictguardBinary builds the real CLI once per test binary; tests run it as a user would.
func evictguardBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "evictguard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "evictguard")
		// With the test hooks (EVICTGUARD_TEST_*), which the shipped binary leaves out.
		out, err := exec.Command("go", "build", "-tags", "evictguard_testhooks", "-o", builtBin, "../cmd/evictguard").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build evictguard: %v", buildErr)
	}
	return builtBin
}

// runEvictguard runs the CLI and returns stdout, stderr and the exit code.
func runEvictguard(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runEvictguardEnv(t, nil, args...)
}

// thresholdsDoc is the JSON contract of `evictguard thresholds` (README.md#commands).
type thresholdsDoc struct {
	Kubelet struct {
		Version, ConfigFile, ConfigDir string
	} `json:"kubelet"`
	Thresholds []struct {
		Signal, Kind, Value, GracePeriod, MinimumReclaim, Source string
	} `json:"thresholds"`
	Warnings   []string `json:"warnings"`
	Mismatches []string `json:"mismatches"`
}

func decodeThresholds(t testing.TB, stdout string) thresholdsDoc {
	t.Helper()
	var d thresholdsDoc
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("thresholds JSON: %v\n%s", err, stdout)
	}
	return d
}

// runEvictguardEnv is runEvictguard with extra environment variables. A process killed by a
// signal reports exit code -1.
func runEvictguardEnv(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, evictguardBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run evictguard %v: %v", args, err)
	}
	return o.String(), e.String(), code
}
