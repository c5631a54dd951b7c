package remediate

import (
	"strings"
	"testing"

	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/treecopy"
)

func migPolicy(to string) *policy.Policy {
	p := &policy.Policy{Migration: policy.MigrationPolicy{To: to}}
	p.ApplyDefaults()
	return p
}

func withState(s monitor.SignalStatus, st monitor.State) monitor.SignalStatus {
	s.State = st
	return s
}

// TestPlanMigrationAction: when the planner offers migrate-data-root, and why not.
func TestPlanMigrationAction(t *testing.T) {
	const gib = int64(1) << 30
	warn := withState(sig("nodefs.available", "10%", 2*gib, 10*gib), monitor.StateWarning)
	breached := withState(sig("imagefs.available", "15%", gib, 10*gib), monitor.StateBreached)
	ok := withState(sig("nodefs.available", "10%", 8*gib, 10*gib), monitor.StateOK)
	memWarn := withState(sig("memory.available", "100Mi", 200<<20, 8*gib), monitor.StateWarning)
	shared := &monitor.Layout{Runtime: migration.RuntimeDocker}
	sharedCtrd := &monitor.Layout{Runtime: migration.RuntimeContainerd}
	dedicated := &monitor.Layout{Runtime: migration.RuntimeDocker, DedicatedImageFs: true}
	crio := &monitor.Layout{Runtime: monitor.RuntimeCRIO}
	dockerOnly := migPolicy("/data/docker")
	dockerOnly.Migration.Runtime = migration.RuntimeDocker
	cases := []struct {
		name          string
		policy        *policy.Policy
		layout        *monitor.Layout
		signals       []monitor.SignalStatus
		wantPreflight bool
		wantRuntime   string
		want          string // in a reason or refusal
	}{
		{"policy without migration", migPolicy(""), shared, []monitor.SignalStatus{warn}, false, "", "does not allow migration"},
		{"warning on a shared imagefs", migPolicy("/data/docker"), shared, []monitor.SignalStatus{warn}, true, migration.RuntimeDocker, "nodefs.available (hard warning)"},
		{"breached, containerd", migPolicy("/data/containerd"), sharedCtrd, []monitor.SignalStatus{ok, breached}, true, migration.RuntimeContainerd, "imagefs.available (hard breached)"},
		{"every disk signal ok", migPolicy("/data/docker"), shared, []monitor.SignalStatus{ok}, false, migration.RuntimeDocker, "no disk signal is in warning"},
		{"memory warning is not a disk signal", migPolicy("/data/docker"), shared, []monitor.SignalStatus{ok, memWarn}, false, migration.RuntimeDocker, "no disk signal is in warning"},
		{"dedicated imagefs", migPolicy("/data/docker"), dedicated, []monitor.SignalStatus{warn}, false, "", "imagefs already has its own filesystem"},
		{"unknown layout", migPolicy("/data/docker"), nil, []monitor.SignalStatus{warn}, false, "", "layout unknown"},
		{"cri-o", migPolicy("/data/crio"), crio, []monitor.SignalStatus{warn}, false, "", `runtime "crio" cannot be migrated`},
		{"policy names another runtime", dockerOnly, sharedCtrd, []monitor.SignalStatus{warn}, false, "", "names runtime docker but the node runs containerd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := PlanMigrationAction(tc.policy, tc.layout, tc.signals)
			if d.NeedsPreflight() != tc.wantPreflight {
				t.Fatalf("needs preflight %v, want %v (%+v)", d.NeedsPreflight(), tc.wantPreflight, d)
			}
			if d.Act() {
				t.Errorf("acts before the preflight")
			}
			if tc.wantRuntime != "" && d.Runtime != tc.wantRuntime {
				t.Errorf("runtime %q, want %q", d.Runtime, tc.wantRuntime)
			}
			all := strings.Join(append(append([]string{}, d.Reasons...), d.Refusals...), "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("reasons %q lack %q", all, tc.want)
			}
		})
	}
}

// TestMigrationDecisionPreflight: the preflight's refusals refuse the migration.
func TestMigrationDecisionPreflight(t *testing.T) {
	const gib = int64(1) << 30
	warn := withState(sig("nodefs.available", "10%", 2*gib, 10*gib), monitor.StateWarning)
	good := &migration.Plan{Runtime: migration.RuntimeDocker, From: "/var/lib/docker", To: "/data/docker", Used: treecopy.Usage{Bytes: gib}, ToAvail: 50 * gib}
	cases := []struct {
		name     string
		plan     *migration.Plan
		wantAct  bool
		wantText string
	}{
		{"passes", good, true, "preflight passed: 1.0 GiB to move"},
		{"too small", &migration.Plan{Runtime: migration.RuntimeDocker, Refusals: []string{"--to /data/docker has 100.0 MiB available"}}, false, "migration preflight: --to /data/docker has 100.0 MiB"},
		{"same filesystem", &migration.Plan{Runtime: migration.RuntimeDocker, Refusals: []string{"--to /var/lib/docker2 is on the same filesystem"}}, false, "same filesystem"},
		{"inside the root", &migration.Plan{Runtime: migration.RuntimeDocker, Refusals: []string{"--to /var/lib/docker/x is inside the current data root"}}, false, "inside the current data root"},
		{"no d_type", &migration.Plan{Runtime: migration.RuntimeDocker, Refusals: []string{"does not report d_type; the overlay2 storage driver needs it"}}, false, "d_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := PlanMigrationAction(migPolicy("/data/docker"), &monitor.Layout{Runtime: migration.RuntimeDocker}, []monitor.SignalStatus{warn})
			d.AddPreflight(tc.plan)
			if d.Act() != tc.wantAct || d.NeedsPreflight() {
				t.Fatalf("act %v needs preflight %v, want act %v", d.Act(), d.NeedsPreflight(), tc.wantAct)
			}
			all := strings.Join(append(append([]string{}, d.Reasons...), d.Refusals...), "\n")
			if !strings.Contains(all, tc.wantText) {
				t.Errorf("reasons %q lack %q", all, tc.wantText)
			}
		})
	}
}
