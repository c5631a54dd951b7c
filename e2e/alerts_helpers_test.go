package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// fillScenario is a nodefs on a 64 MiB tmpfs with evictionHard nodefs.available<10% (6.4 MiB),
// prefilled so that a writer at Rate reaches the threshold after about ToThreshold.
type fillScenario struct {
	RootDir, ConfigFile string
	Capacity            int64
	Threshold           int64 // bytes available at which eviction starts
	Rate                int64 // bytes per second the writer adds
}

const scenarioSize = 64 << 20

func newFillScenario(t *testing.T, toThreshold time.Duration, rate int64) *fillScenario {
	t.Helper()
	root := harness.TmpFS(t, scenarioSize, 0)
	cfgDir := harness.TempDir(t, "kubelet-config")
	cfg := filepath.Join(cfgDir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard:\n  nodefs.available: \"10%\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fillScenarioOn(t, root, cfg, toThreshold, rate)
}

// fillScenarioOn is the scenario on an existing nodefs root (a scenarioSize tmpfs) whose
// kubelet configuration cfg has evictionHard nodefs.available<10%.
func fillScenarioOn(t *testing.T, root, cfg string, toThreshold time.Duration, rate int64) *fillScenario {
	t.Helper()
	s := &fillScenario{RootDir: root, ConfigFile: cfg, Rate: rate}
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	s.Capacity = int64(st.Blocks) * st.Frsize
	s.Threshold = int64(float64(float32(0.1)) * float64(s.Capacity))
	prefill := s.Available(t) - s.Threshold - int64(toThreshold.Seconds())*rate
	if prefill < 0 {
		t.Fatalf("scenario does not fit: prefill %d", prefill)
	}
	if err := os.WriteFile(filepath.Join(root, "prefill"), make([]byte, prefill), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// Available is f_bavail·f_frsize of the nodefs, as the kubelet computes it.
func (s *fillScenario) Available(t *testing.T) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.RootDir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Frsize
}

// Args are the `evictguard run` arguments for this node (no real kubelet needed).
func (s *fillScenario) Args(listen string, extra ...string) []string {
	return append([]string{"run", "--kubelet-cmdline", "--root-dir=" + s.RootDir + " --config=" + s.ConfigFile,
		"--kubelet-version", "1.37", "--listen", listen, "--interval", "1s", "--runtime", "containerd"}, extra...)
}

// StartWriter appends to a file at Rate until the returned stop is called (stop waits).
func (s *fillScenario) StartWriter(t *testing.T) (stop func()) {
	t.Helper()
	return s.StartWriterAt(t, s.Rate)
}

// StartWriterAt is StartWriter at another rate (bytes per second).
func (s *fillScenario) StartWriterAt(t *testing.T, rate int64) (stop func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(s.RootDir, "writer"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const ticks = 20
	chunk := make([]byte, rate/ticks)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer f.Close()
		tk := time.NewTicker(time.Second / ticks)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				if _, err := f.Write(chunk); err != nil {
					return // ENOSPC: the test's assertions will say why
				}
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// Free stops nothing; it deletes what the writer and the prefill wrote.
func (s *fillScenario) Free(t *testing.T) {
	t.Helper()
	for _, n := range []string{"writer", "prefill"} {
		if err := os.Remove(filepath.Join(s.RootDir, n)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

// startDaemon runs the built evictguard with args and waits for /readyz on listen.
func startDaemon(t *testing.T, name string, args ...string) *harness.Process {
	t.Helper()
	dir := harness.TempDir(t, name)
	var listen string
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			listen = args[i+1]
		}
	}
	p := harness.Start(t, dir, name, nil, evictguardBinary(t), args...)
	if err := waitDaemonReady(p, listen, 30*time.Second); err != nil {
		t.Fatalf("evictguard did not become ready: %v", err)
	}
	return p
}

// waitDaemonReady waits until the daemon p answers 200 on listen's /readyz.
func waitDaemonReady(p *harness.Process, listen string, timeout time.Duration) error {
	return harness.WaitFor(context.Background(), timeout, p, func() error {
		b, code, err := httpGetCode("http://" + listen + "/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz %d: %s", code, b)
		}
		return nil
	})
}

// vmRSS is the resident set of process pid in MiB (false when it cannot be read).
func vmRSS(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err == nil
		}
	}
	return 0, false
}

func httpGetCode(u string) ([]byte, int, error) {
	resp, err := http.Get(u)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

// amAlert is an element of Alertmanager's GET /api/v2/alerts.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

// activeAlerts lists the active (not resolved) alerts of Alertmanager with alertname and
// signal.
func activeAlerts(am *harness.Alertmanager, alertname, signal string) ([]amAlert, error) {
	q := url.Values{}
	q.Add("filter", fmt.Sprintf("alertname=%q", alertname))
	q.Add("filter", fmt.Sprintf("signal=%q", signal))
	b, code, err := httpGetCode(am.URL + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET alerts: %d %s", code, b)
	}
	var all []amAlert
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("alerts JSON: %w: %s", err, b)
	}
	var out []amAlert
	for _, a := range all {
		if a.Status.State == "active" && (a.EndsAt.IsZero() || a.EndsAt.After(time.Now())) {
			out = append(out, a)
		}
	}
	return out, nil
}

func describeAlerts(as []amAlert) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "%v ends %s: %s\n", a.Labels, a.EndsAt.Format(time.RFC3339), a.Annotations["summary"])
	}
	return b.String()
}
