package reclaim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/monitor"
)

type recordingReporter struct {
	mu      sync.Mutex
	reports []journal.Report
}

func (r *recordingReporter) Report(_ context.Context, rep journal.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
}

func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func available(t *testing.T, dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Frsize
}

func fill(t *testing.T, p string, n int) {
	if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
}

func snapAt(threshold, headroom int64) *monitor.Snapshot {
	return &monitor.Snapshot{Signals: []monitor.SignalStatus{{Signal: "nodefs.available", State: monitor.StateOK,
		ThresholdQuantity: threshold, Headroom: headroom}}}
}

// TestLadderBallastOnTmpfs releases and re-creates a real fallocated ballast on a tmpfs,
// with the policy's dry-run and allow-list respected.
func TestLadderBallastOnTmpfs(t *testing.T) {
	const mib = 1 << 20
	dir := mountTmpfs(t, "64m")
	b := &Ballast{Path: filepath.Join(dir, "evictguard", "ballast"), Size: 16 * mib}
	before := available(t, dir)
	if err := b.Create(); err != nil {
		t.Fatal(err)
	}
	if got := before - available(t, dir); got < 16*mib {
		t.Fatalf("ballast took %d bytes, want ≥ 16 MiB (not sparse)", got)
	}
	threshold := int64(20 * mib)
	// Leave 4 MiB of headroom above the threshold.
	fill(t, filepath.Join(dir, "filler"), int(available(t, dir)-threshold-4*mib))

	tests := []struct {
		name        string
		policy      Policy
		wantResults []string
		wantPresent bool
	}{
		{"blocked by policy", Policy{LowHeadroom: 8 * mib}, []string{journal.ResultBlocked, journal.ResultBlocked}, true},
		{"dry run", Policy{DryRun: true, Allow: LadderSteps, LowHeadroom: 8 * mib}, []string{journal.ResultDryRun, journal.ResultDryRun}, true},
		{"released", Policy{Allow: []string{StepBallast}, LowHeadroom: 8 * mib}, []string{journal.ResultApplied}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingReporter{}
			l := &Ladder{Policy: tc.policy, FsPath: dir, Ballast: b, Reporter: rec}
			res, err := l.Step(context.Background(), snapAt(threshold, 0))
			if err != nil {
				t.Fatal(err)
			}
			if !res.Danger {
				t.Fatalf("no danger at headroom %d", res.HeadroomBefore)
			}
			var got []string
			for _, a := range res.Actions {
				got = append(got, a.Result)
			}
			if !slices.Equal(got, tc.wantResults) {
				t.Errorf("results = %v, want %v (%+v)", got, tc.wantResults, res.Actions)
			}
			if len(rec.reports) != len(res.Actions) {
				t.Errorf("%d reports for %d actions", len(rec.reports), len(res.Actions))
			}
			st, _ := b.State()
			if st.Present != tc.wantPresent {
				t.Errorf("ballast present = %v, want %v", st.Present, tc.wantPresent)
			}
			if !tc.wantPresent {
				if res.Actions[0].Bytes < 16*mib || res.HeadroomAfter < 16*mib {
					t.Errorf("released %d bytes, headroom after %d", res.Actions[0].Bytes, res.HeadroomAfter)
				}
				if res.Escalate != nil {
					t.Errorf("escalated although the ballast was enough")
				}
			}
		})
	}

	// Pressure over: not yet enough headroom for the ballast plus margin → nothing; then
	// the filler goes and the ballast comes back.
	l := &Ladder{Policy: Policy{Allow: []string{StepBallast}, LowHeadroom: 8 * mib, RecreateCooldown: time.Nanosecond}, FsPath: dir, Ballast: b}
	res, err := l.Step(context.Background(), snapAt(threshold, 0))
	if err != nil || len(res.Actions) != 0 {
		t.Fatalf("at headroom %d: %+v %v", res.HeadroomBefore, res.Actions, err)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	res, err = l.Step(context.Background(), snapAt(threshold, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Actions) != 1 || res.Actions[0].Step != BallastRecreate || res.Actions[0].Result != journal.ResultApplied {
		t.Fatalf("actions = %+v", res.Actions)
	}
	if st, _ := b.State(); !st.Present || st.Allocated < 16*mib {
		t.Errorf("ballast not re-created: %+v", st)
	}
}

type fakeEscalator struct {
	calls []Escalation
	err   error
}

func (f *fakeEscalator) Escalate(_ context.Context, e Escalation) (string, error) {
	f.calls = append(f.calls, e)
	return "remediation pass queued", f.err
}

// TestLadderEscalates: with nothing local left the ladder returns a typed escalation and,
// when the policy allows it and an escalator is wired, calls it once per EscalateEvery.
func TestLadderEscalates(t *testing.T) {
	for _, tc := range []struct {
		name       string
		policy     Policy
		esc        *fakeEscalator
		headroom   int64
		wantResult string // "" means no escalation action
		wantCalls  int
	}{
		{name: "triggers the escalator", policy: Policy{Allow: LadderSteps}, esc: &fakeEscalator{},
			headroom: 10 << 20, wantResult: journal.ResultApplied, wantCalls: 1},
		{name: "escalator fails", policy: Policy{Allow: LadderSteps}, esc: &fakeEscalator{err: errors.New("boom")},
			headroom: 10 << 20, wantResult: journal.ResultFailed, wantCalls: 1},
		{name: "not allowed", policy: Policy{Allow: []string{StepBallast, StepGC, StepLogs}}, esc: &fakeEscalator{},
			headroom: 10 << 20, wantResult: journal.ResultBlocked},
		{name: "dry run", policy: Policy{Allow: LadderSteps, DryRun: true}, esc: &fakeEscalator{},
			headroom: 10 << 20, wantResult: journal.ResultDryRun},
		{name: "nothing to escalate to", policy: Policy{Allow: LadderSteps}, headroom: 10 << 20, wantResult: journal.ResultBlocked},
		{name: "beyond the horizon", policy: Policy{Allow: LadderSteps, Horizon: time.Second}, esc: &fakeEscalator{},
			headroom: 10 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rate := 1e6 // 10 MiB at 1 MB/s: about 10s to the threshold
			snap := snapAt(1<<20, tc.headroom)
			snap.Signals[0].FillRate = &rate
			rec := &recordingReporter{}
			l := &Ladder{Policy: tc.policy, Reporter: rec}
			if tc.esc != nil {
				l.Escalator = tc.esc
			}
			res, err := l.Step(context.Background(), snap)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantResult == "" {
				if res.Escalate != nil || len(res.Actions) != 0 {
					t.Fatalf("escalated out of danger: %+v", res)
				}
				return
			}
			if res.Escalate == nil || res.Escalate.Headroom != tc.headroom || len(res.Actions) != 1 || res.Actions[0].Step != StepEscalate {
				t.Fatalf("res = %+v", res)
			}
			if got := res.Actions[0].Result; got != tc.wantResult {
				t.Errorf("result %s (%s), want %s", got, res.Actions[0].Reason, tc.wantResult)
			}
			if len(rec.reports) != 1 || rec.reports[0].Action != StepEscalate {
				t.Errorf("reports %+v", rec.reports)
			}
			if tc.esc != nil && len(tc.esc.calls) != tc.wantCalls {
				t.Errorf("escalator called %d times, want %d", len(tc.esc.calls), tc.wantCalls)
			}
			if tc.wantResult == journal.ResultApplied && !strings.Contains(res.Actions[0].Reason, "remediation pass queued") {
				t.Errorf("reason %q does not say what was triggered", res.Actions[0].Reason)
			}
			// Still in danger on the next cycle: no second escalation within EscalateEvery,
			// but the result still carries it.
			res, err = l.Step(context.Background(), snap)
			if err != nil {
				t.Fatal(err)
			}
			if res.Escalate == nil || len(res.Actions) != 0 || len(rec.reports) != 1 {
				t.Errorf("second step: %+v, %d reports", res, len(rec.reports))
			}
			if tc.esc != nil && len(tc.esc.calls) != tc.wantCalls {
				t.Errorf("escalator called again within %s", EscalateEvery)
			}
		})
	}
}
