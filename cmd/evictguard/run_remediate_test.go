package main

import (
	"testing"

	"github.com/evictguard/evictguard/monitor"
)

// TestDaemonRemediationTrigger: a pass is triggered when a signal enters warning or breached
// (also when it is already there at start, and on warning → breached), not while it stays,
// not on recovery, and a pending trigger absorbs further ones.
func TestDaemonRemediationTrigger(t *testing.T) {
	snap := func(states ...monitor.State) *monitor.Snapshot {
		s := &monitor.Snapshot{}
		for i, st := range states {
			s.Signals = append(s.Signals, monitor.SignalStatus{Signal: []string{"nodefs.available", "imagefs.available"}[i], Kind: "hard", State: st})
		}
		return s
	}
	ok, warn, br := monitor.StateOK, monitor.StateWarning, monitor.StateBreached
	steps := []struct {
		snap *monitor.Snapshot
		fire bool
	}{
		{snap(ok, ok), false},
		{snap(warn, ok), true},
		{snap(warn, ok), false},
		{snap(br, ok), true},
		{snap(br, ok), false},
		{snap(warn, ok), false}, // breached → warning: better, not a reason to act
		{snap(ok, ok), false},
		{snap(ok, br), true},
	}
	d := &daemonRemediation{prev: map[string]monitor.State{}, trigger: make(chan struct{}, 1)}
	for i, s := range steps {
		d.notify(s.snap)
		fired := false
		select {
		case <-d.trigger:
			fired = true
		default:
		}
		if fired != s.fire {
			t.Errorf("step %d: triggered %v, want %v", i, fired, s.fire)
		}
	}
	// Already breached at the first evaluation: act.
	d = &daemonRemediation{prev: map[string]monitor.State{}, trigger: make(chan struct{}, 1)}
	d.notify(snap(br, ok))
	d.notify(snap(br, warn)) // absorbed by the pending trigger, never blocks
	if len(d.trigger) != 1 {
		t.Errorf("pending triggers %d, want 1", len(d.trigger))
	}
}
