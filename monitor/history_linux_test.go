package monitor

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/kubeletcfg"
)

// TestHistoryRestore: a Monitor started from another's encoded history gives fill rates at
// its first Step, for the same filesystem (device and path) only and only with samples still
// inside the window.
func TestHistoryRestore(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	newMonitor := func(dev uint64) *Monitor {
		t.Helper()
		m, err := New(Config{
			Layout:     &Layout{Filesystems: []Filesystem{{Role: RoleNodeFs, Path: "/var/lib/kubelet", HostPath: dir, Dev: dev}}},
			Thresholds: []kubeletcfg.Threshold{pct("nodefs.available", 0.1, "10%")},
			HostRoot:   "/",
			Now:        func() time.Time { return now },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	nodefsRate := func(m *Monitor) *float64 {
		t.Helper()
		s, err := m.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, sig := range s.Signals {
			if sig.Signal == "nodefs.available" {
				return sig.FillRate
			}
		}
		t.Fatal("no nodefs.available")
		return nil
	}
	old := newMonitor(st.Dev)
	for range 8 {
		now = now.Add(10 * time.Second)
		nodefsRate(old)
	}
	b, err := json.Marshal(old.History())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		dev      uint64
		later    time.Duration
		restored int
	}{
		{name: "same filesystem: a rate at once", dev: st.Dev, later: 5 * time.Second, restored: 2},
		{name: "another device: nothing", dev: st.Dev + 1, later: 5 * time.Second, restored: 0},
		{name: "history older than the window: nothing", dev: st.Dev, later: 10 * time.Minute, restored: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := DecodeHistory(b)
			if err != nil {
				t.Fatal(err)
			}
			saved := now
			defer func() { now = saved }()
			now = now.Add(tc.later)
			m := newMonitor(tc.dev)
			// The memory and PID predictors are restored too (3 of them, when this machine
			// gave them samples).
			if got := m.RestoreHistory(h, now); got-sysRestored(h, now) != tc.restored {
				t.Errorf("restored %d predictors (%d of them memory/PID), want %d filesystem ones", got, sysRestored(h, now), tc.restored)
			}
			if rate := nodefsRate(m); (rate != nil) != (tc.restored > 0) {
				t.Errorf("fill rate at the first step: %v, want known=%v", rate, tc.restored > 0)
			}
		})
	}
	if _, err := DecodeHistory([]byte(`{"version":2,"series":{}}`)); err == nil {
		t.Error("a history of another version was accepted")
	}
}

// sysRestored counts the memory/PID series of h with a sample inside the default window.
func sysRestored(h *History, now time.Time) int {
	n := 0
	for _, sig := range sysSignals {
		for _, s := range h.Series["sys/"+sig] {
			if !s.T.After(now) && now.Sub(s.T) <= 5*time.Minute {
				n++
				break
			}
		}
	}
	return n
}
