package monitor

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evictguard/evictguard/e2e/harness"
)

type fixedSnapshot struct{ s *Snapshot }

func (f fixedSnapshot) Latest() *Snapshot { return f.s }

func f64(v float64) *float64 { return &v }

var testSnapshot = &Snapshot{
	Time: time.Unix(1700000000, 500_000_000),
	Filesystems: []FilesystemStatus{
		{Filesystem: Filesystem{Role: RoleNodeFs, Path: "/var/lib/kubelet", Mountpoint: "/", Device: "/dev/sda1"},
			CapacityBytes: 1000, AvailableBytes: 400, Inodes: 100, InodesFree: 50},
		{Filesystem: Filesystem{Role: RoleImageFs, Path: "/data/docker", Mountpoint: "/data", Device: "/dev/sdb1"},
			Error: "statfs /data/docker: timed out"},
	},
	Signals: []SignalStatus{
		{Signal: "nodefs.available", Kind: "hard", Threshold: "10%", ThresholdQuantity: 100, Observed: 400, Headroom: 300,
			State: StateWarning, SecondsToThreshold: f64(30), FillRate: f64(10), Filesystem: "/var/lib/kubelet"},
		{Signal: "nodefs.inodesFree", Kind: "hard", Threshold: "5%", ThresholdQuantity: 5, Observed: 50, Headroom: 45,
			State: StateOK, Filesystem: "/var/lib/kubelet"},
		{Signal: "memory.available", Kind: "hard", Threshold: "100Mi", ThresholdQuantity: 104857600, Observed: 204857600, Headroom: 100000000,
			State: StateOK},
		{Signal: "imagefs.available", Kind: "hard", Threshold: "15%", State: StateUnknown, Error: "statfs: timed out", Filesystem: "/data/docker"},
	},
}

func TestCollector(t *testing.T) {
	tests := []struct {
		name    string
		snap    *Snapshot
		configz []string
		want    string
		metrics []string
	}{
		{
			name:    "no evaluation yet",
			snap:    nil,
			want:    "# HELP evictguard_thresholds_configz_mismatch 1 if the eviction thresholds computed from the kubelet's flags and files differ from its /configz, else 0.\n# TYPE evictguard_thresholds_configz_mismatch gauge\nevictguard_thresholds_configz_mismatch 0\n",
			metrics: []string{"evictguard_thresholds_configz_mismatch", "evictguard_last_evaluation_timestamp_seconds", "evictguard_signal_state"},
		},
		{
			name:    "snapshot",
			snap:    testSnapshot,
			configz: []string{"evictionHard[nodefs.available]: computed \"10%\" but configz has \"5%\""},
			want: `
# HELP evictguard_last_evaluation_timestamp_seconds Unix time of the last completed evaluation of the eviction signals.
# TYPE evictguard_last_evaluation_timestamp_seconds gauge
evictguard_last_evaluation_timestamp_seconds 1.7000000005e+09
# HELP evictguard_thresholds_configz_mismatch 1 if the eviction thresholds computed from the kubelet's flags and files differ from its /configz, else 0.
# TYPE evictguard_thresholds_configz_mismatch gauge
evictguard_thresholds_configz_mismatch 1
# HELP evictguard_signal_seconds_to_threshold Predicted seconds until the signal reaches its eviction threshold at the current fill rate (0 when already crossed; absent when not being consumed).
# TYPE evictguard_signal_seconds_to_threshold gauge
evictguard_signal_seconds_to_threshold{kind="hard",role="nodefs",signal="nodefs.available"} 30
# HELP evictguard_signal_threshold_ratio Eviction threshold as a fraction of capacity, for thresholds given in percent.
# TYPE evictguard_signal_threshold_ratio gauge
evictguard_signal_threshold_ratio{kind="hard",role="imagefs",signal="imagefs.available"} 0.15
evictguard_signal_threshold_ratio{kind="hard",role="nodefs",signal="nodefs.available"} 0.1
evictguard_signal_threshold_ratio{kind="hard",role="nodefs",signal="nodefs.inodesFree"} 0.05
# HELP evictguard_signal_threshold_bytes Effective eviction threshold of the signal as an absolute amount (bytes).
# TYPE evictguard_signal_threshold_bytes gauge
evictguard_signal_threshold_bytes{kind="hard",role="",signal="memory.available"} 1.048576e+08
evictguard_signal_threshold_bytes{kind="hard",role="nodefs",signal="nodefs.available"} 100
# HELP evictguard_signal_headroom_inodes Available amount above the eviction threshold (inodes); negative when crossed.
# TYPE evictguard_signal_headroom_inodes gauge
evictguard_signal_headroom_inodes{kind="hard",role="nodefs",signal="nodefs.inodesFree"} 45
# HELP evictguard_signal_state Evaluated state of the signal: 1 for the current state (ok, warning, breached or unknown), 0 for the others.
# TYPE evictguard_signal_state gauge
evictguard_signal_state{kind="hard",role="",signal="memory.available",state="breached"} 0
evictguard_signal_state{kind="hard",role="",signal="memory.available",state="ok"} 1
evictguard_signal_state{kind="hard",role="",signal="memory.available",state="unknown"} 0
evictguard_signal_state{kind="hard",role="",signal="memory.available",state="warning"} 0
evictguard_signal_state{kind="hard",role="imagefs",signal="imagefs.available",state="breached"} 0
evictguard_signal_state{kind="hard",role="imagefs",signal="imagefs.available",state="ok"} 0
evictguard_signal_state{kind="hard",role="imagefs",signal="imagefs.available",state="unknown"} 1
evictguard_signal_state{kind="hard",role="imagefs",signal="imagefs.available",state="warning"} 0
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.available",state="breached"} 0
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.available",state="ok"} 0
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.available",state="unknown"} 0
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.available",state="warning"} 1
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.inodesFree",state="breached"} 0
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.inodesFree",state="ok"} 1
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.inodesFree",state="unknown"} 0
evictguard_signal_state{kind="hard",role="nodefs",signal="nodefs.inodesFree",state="warning"} 0
# HELP evictguard_filesystem_available_bytes Bytes available to unprivileged users on the filesystem (f_bavail·f_frsize), as the kubelet counts them.
# TYPE evictguard_filesystem_available_bytes gauge
evictguard_filesystem_available_bytes{device="/dev/sda1",mountpoint="/",path="/var/lib/kubelet",role="nodefs"} 400
# HELP evictguard_filesystem_device_error 1 if the last statfs of the filesystem failed or timed out, else 0.
# TYPE evictguard_filesystem_device_error gauge
evictguard_filesystem_device_error{device="/dev/sda1",mountpoint="/",path="/var/lib/kubelet",role="nodefs"} 0
evictguard_filesystem_device_error{device="/dev/sdb1",mountpoint="/data",path="/data/docker",role="imagefs"} 1
`,
			metrics: []string{"evictguard_last_evaluation_timestamp_seconds", "evictguard_thresholds_configz_mismatch",
				"evictguard_signal_seconds_to_threshold", "evictguard_signal_threshold_ratio", "evictguard_signal_threshold_bytes",
				"evictguard_signal_headroom_inodes", "evictguard_signal_state", "evictguard_filesystem_available_bytes",
				"evictguard_filesystem_device_error"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCollector(fixedSnapshot{tc.snap}, CollectorOptions{
				ConfigzChecked:    func() bool { return true },
				ConfigzMismatches: func() []string { return tc.configz },
			})
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want), tc.metrics...); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestMetricsPromtool scrapes a real /metrics handler (with remediation counters) and runs
// `promtool check metrics` on it, as node_exporter's checkmetrics.sh does.
func TestMetricsPromtool(t *testing.T) {
	c := NewCollector(fixedSnapshot{testSnapshot}, CollectorOptions{
		Build:          BuildInfo{Version: "test", Revision: "abc", GoVersion: "go1.26"},
		ConfigzChecked: func() bool { return false },
	})
	reg, err := NewRegistry(c)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := NewRemediationMetrics(reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rm.Observe("threshold-rewrite", "blocked")
	srv := httptest.NewServer(NewHandler(reg, fixedSnapshot{testSnapshot}, HandlerOptions{MaxAge: time.Hour, Now: func() time.Time { return testSnapshot.Time }}))
	defer srv.Close()

	body := get(t, srv.URL+"/metrics", http.StatusOK)
	for _, want := range []string{
		`evictguard_build_info{goversion="go1.26",revision="abc",version="test"} 1`,
		`evictguard_remediation_attempts_total{action="migrate-data-root",result="failed"} 0`,
		`evictguard_remediation_attempts_total{action="threshold-rewrite",result="blocked"} 1`,
		`evictguard_thresholds_configz_checked 0`,
		`evictguard_filesystem_capacity_bytes{device="/dev/sda1",mountpoint="/",path="/var/lib/kubelet",role="nodefs"} 1000`,
		`evictguard_signal_info{filesystem="/var/lib/kubelet",kind="hard",role="nodefs",signal="nodefs.available",threshold="10%"} 1`,
		"go_goroutines ", "process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	get(t, srv.URL+"/readyz", http.StatusOK)
	get(t, srv.URL+"/healthz", http.StatusOK)

	promtool := harness.Binary(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestHandlerReadiness(t *testing.T) {
	now := time.Unix(1700000100, 0)
	tests := []struct {
		name            string
		snap            *Snapshot
		healthz, readyz int
	}{
		{"no evaluation yet", nil, http.StatusOK, http.StatusServiceUnavailable},
		{"fresh", &Snapshot{Time: now.Add(-5 * time.Second)}, http.StatusOK, http.StatusOK},
		{"stuck loop", &Snapshot{Time: now.Add(-2 * time.Minute)}, http.StatusServiceUnavailable, http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHandler(prometheus.NewRegistry(), fixedSnapshot{tc.snap}, HandlerOptions{MaxAge: time.Minute, Now: func() time.Time { return now }})
			srv := httptest.NewServer(h)
			defer srv.Close()
			get(t, srv.URL+"/healthz", tc.healthz)
			get(t, srv.URL+"/readyz", tc.readyz)
		})
	}
}

func get(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Errorf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return string(b)
}
