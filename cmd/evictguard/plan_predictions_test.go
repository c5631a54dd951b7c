package main

import (
	"testing"

	"github.com/evictguard/evictguard/monitor"
)

func TestWithPredictions(t *testing.T) {
	secs, rate := 1800.0, 4096.0
	daemon := &monitor.Snapshot{Signals: []monitor.SignalStatus{
		{Signal: "nodefs.available", Kind: "hard", State: monitor.StateWarning, SecondsToThreshold: &secs, FillRate: &rate},
		{Signal: "imagefs.available", Kind: "hard", State: monitor.StateOK},
		{Signal: "nodefs.inodesFree", Kind: "hard", State: monitor.StateBreached},
	}}
	tests := []struct {
		name      string
		fresh     monitor.SignalStatus
		wantState monitor.State
		wantSecs  bool
	}{
		{"a prediction makes the fresh sample warn", monitor.SignalStatus{Signal: "nodefs.available", Kind: "hard", State: monitor.StateOK}, monitor.StateWarning, true},
		{"another kind is another signal", monitor.SignalStatus{Signal: "nodefs.available", Kind: "soft", State: monitor.StateOK}, monitor.StateOK, false},
		{"the daemon's ok does not soften", monitor.SignalStatus{Signal: "imagefs.available", Kind: "hard", State: monitor.StateBreached}, monitor.StateBreached, false},
		{"breached in the daemon is at least a warning now", monitor.SignalStatus{Signal: "nodefs.inodesFree", Kind: "hard", State: monitor.StateOK}, monitor.StateWarning, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fresh := &monitor.Snapshot{Signals: []monitor.SignalStatus{tc.fresh}}
			withPredictions(fresh, daemon)
			got := fresh.Signals[0]
			if got.State != tc.wantState || (got.SecondsToThreshold != nil) != tc.wantSecs {
				t.Errorf("state %s, seconds %v; want %s, seconds %t", got.State, got.SecondsToThreshold, tc.wantState, tc.wantSecs)
			}
		})
	}
	withPredictions(&monitor.Snapshot{}, nil) // no daemon snapshot yet
}
