package monitor

import (
	"testing"
	"time"

	"github.com/evictguard/evictguard/kubeletcfg"
)

// TestSetEvalKeepsState: new evaluation settings judge the next Step, while each signal's
// state (and its Since) and the predictors' fill-rate history carry on.
func TestSetEvalKeepsState(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	m, err := New(Config{
		Layout:     &Layout{Filesystems: []Filesystem{{Role: RoleNodeFs, Path: "/var/lib/kubelet", HostPath: t.TempDir()}}},
		Thresholds: []kubeletcfg.Threshold{pct("nodefs.available", 0.1, "10%")},
		Now:        func() time.Time { return now },
		// Only the margin decides here: other writers on the test's disk make the prediction
		// meaningless at this fake clock's pace.
		Eval: EvalConfig{WarnHorizon: time.Nanosecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	step := func() SignalStatus {
		t.Helper()
		now = now.Add(time.Second)
		s, err := m.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, sig := range s.Signals {
			if sig.Signal == "nodefs.available" {
				return sig
			}
		}
		t.Fatal("no nodefs.available")
		return SignalStatus{}
	}
	var first SignalStatus
	for i := range 6 {
		if s := step(); i == 0 {
			first = s
		}
	}
	if first.State != StateOK {
		t.Skipf("the test directory's filesystem is nearly full (%s); the test needs an ok signal", first.State)
	}
	r := float64(first.Headroom) / float64(first.Capacity) // headroom as a fraction of capacity
	tests := []struct {
		name  string
		cfg   EvalConfig
		state State
		since time.Time // zero: not checked
	}{
		{"same settings: state and Since kept", EvalConfig{WarnHorizon: time.Nanosecond}, StateOK, first.Since},
		{"a margin above the headroom: warning", EvalConfig{WarnHorizon: time.Nanosecond, WarnMargin: min(r*1.2, 0.99)}, StateWarning, time.Time{}},
		{"margin below the headroom, inside the exit band: still warning", EvalConfig{WarnHorizon: time.Nanosecond, WarnMargin: r * 0.8, ExitBand: 0.5}, StateWarning, time.Time{}},
		{"a narrow exit band: ok", EvalConfig{WarnHorizon: time.Nanosecond, WarnMargin: r * 0.8, ExitBand: 0.01}, StateOK, time.Time{}},
	}
	var prev SignalStatus
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.SetEval(tt.cfg)
			s := step()
			if s.State != tt.state {
				t.Errorf("state %s, want %s (headroom %d of %d)", s.State, tt.state, s.Headroom, s.Capacity)
			}
			if !tt.since.IsZero() && !s.Since.Equal(tt.since) {
				t.Errorf("Since %v, want %v (state history lost)", s.Since, tt.since)
			}
			if prev.State == s.State && !s.Since.Equal(prev.Since) && prev.Signal != "" {
				t.Errorf("Since moved from %v to %v without a change of state", prev.Since, s.Since)
			}
			if s.FillRate == nil {
				t.Error("no fill rate after SetEval: the predictor's history was lost")
			}
			if got := m.Eval(); got.WarnMargin != tt.cfg.withDefaults().WarnMargin || got.WarnHorizon != tt.cfg.withDefaults().WarnHorizon {
				t.Errorf("Eval() = %+v, want %+v", got, tt.cfg.withDefaults())
			}
			prev = s
		})
	}
}
