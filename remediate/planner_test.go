package remediate

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/sdbus"
)

func effWith(hard map[string]string) *kubeletcfg.Effective {
	eff := &kubeletcfg.Effective{Version: "1.37.2"}
	for k, v := range hard {
		eff.Thresholds = append(eff.Thresholds, kubeletcfg.Threshold{Signal: k, Kind: kubeletcfg.Hard, Raw: v})
	}
	eff.Thresholds = append(eff.Thresholds, kubeletcfg.Threshold{Signal: "allocatableMemory.available", Kind: kubeletcfg.Hard, Raw: "100Mi"})
	return eff
}

func sig(name, thr string, observed, capacity int64) monitor.SignalStatus {
	return monitor.SignalStatus{Signal: name, Kind: "hard", Threshold: thr, ThresholdQuantity: quantityOf(thr, capacity), Observed: observed, Capacity: capacity}
}

var defaults5 = map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%", "imagefs.available": "15%", "imagefs.inodesFree": "5%"}

func TestPlanThresholds(t *testing.T) {
	const gib = int64(1) << 30
	capB := 10 * gib
	cases := []struct {
		name        string
		policy      policy.Policy
		signals     []monitor.SignalStatus
		wantChanges map[string]string
		refusal     string
	}{
		{
			name: "single disk at 91.5%: nodefs and imagefs both lowered, defaults kept",
			signals: []monitor.SignalStatus{
				sig("nodefs.available", "10%", capB*85/1000, capB), sig("imagefs.available", "15%", capB*85/1000, capB),
				sig("nodefs.inodesFree", "5%", 9000, 10000), sig("imagefs.inodesFree", "5%", 9000, 10000),
			},
			wantChanges: map[string]string{"nodefs.available": "5%", "imagefs.available": "5%"},
		},
		{
			name:   "imagefs not allowed: refuse, it would stay breached",
			policy: policy.Policy{Signals: []string{"nodefs.available"}},
			signals: []monitor.SignalStatus{
				sig("nodefs.available", "10%", capB*85/1000, capB), sig("imagefs.available", "15%", capB*85/1000, capB),
			},
			wantChanges: map[string]string{"nodefs.available": "5%"},
			refusal:     "does not allow changing imagefs.available",
		},
		{
			name:        "below the floor: refuse",
			signals:     []monitor.SignalStatus{sig("nodefs.available", "10%", capB*6/100, capB)},
			wantChanges: map[string]string{},
			refusal:     "below the floor",
		},
		{
			name:        "enough headroom: nothing to do",
			signals:     []monitor.SignalStatus{sig("nodefs.available", "10%", capB/2, capB)},
			wantChanges: map[string]string{},
		},
		{
			name:        "quantity threshold stays a quantity",
			policy:      policy.Policy{Headroom: policy.Amount{Bytes: "1Gi"}, Floor: policy.Amount{Bytes: "512Mi"}},
			signals:     []monitor.SignalStatus{sig("nodefs.available", "2Gi", 2*gib+gib/2, capB)},
			wantChanges: map[string]string{"nodefs.available": "1536Mi"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			p.ApplyDefaults()
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			tp := PlanThresholds(&p, effWith(defaults5), tc.signals)
			if !maps.Equal(tp.Changes, tc.wantChanges) {
				t.Errorf("changes %v, want %v; reasons %q refusals %q", tp.Changes, tc.wantChanges, tp.Reasons, tp.Refusals)
			}
			if len(tp.New) != 5 || tp.New["memory.available"] != "100Mi" {
				t.Errorf("new map is not complete: %v", tp.New)
			}
			if _, ok := tp.New["allocatableMemory.available"]; ok {
				t.Errorf("kubelet-added signal in the map: %v", tp.New)
			}
			got := strings.Join(tp.Refusals, "\n")
			if (tc.refusal == "") != (got == "") || !strings.Contains(got, tc.refusal) {
				t.Errorf("refusals %q, want one containing %q", tp.Refusals, tc.refusal)
			}
		})
	}
}

func TestLocalBlockers(t *testing.T) {
	now := time.Date(2026, 3, 4, 3, 30, 0, 0, time.UTC) // a Wednesday
	cases := []struct {
		name   string
		policy policy.Policy
		in     GateInput
		want   string
	}{
		{name: "all clear", in: GateInput{KubeletSince: now.Add(-time.Hour)}},
		{name: "outside window", policy: policy.Policy{Windows: []policy.Window{{Days: []string{"Sat", "Sun"}, Start: "02:00", End: "05:00", TimeZone: "UTC"}}}, in: GateInput{KubeletSince: now.Add(-time.Hour)}, want: "outside every maintenance window"},
		{name: "inside window across midnight in a zone", policy: policy.Policy{Windows: []policy.Window{{Days: []string{"Tue"}, Start: "23:00", End: "06:00", TimeZone: "Europe/Berlin"}}}, in: GateInput{KubeletSince: now.Add(-time.Hour)}},
		{name: "cooldown", in: GateInput{KubeletSince: now.Add(-time.Hour), Restarts: []time.Time{now.Add(-10 * time.Minute)}}, want: "within cooldown"},
		{name: "budget", policy: policy.Policy{Cooldown: policy.Duration{Duration: time.Minute}}, in: GateInput{KubeletSince: now.Add(-time.Hour), Restarts: []time.Time{now.Add(-5 * time.Hour), now.Add(-2 * time.Hour)}}, want: "restart budget"},
		{name: "uptime", in: GateInput{KubeletSince: now.Add(-time.Minute)}, want: "kubelet up for"},
		{name: "failed op", in: GateInput{KubeletSince: now.Add(-time.Hour), FailedOps: []*journal.Operation{{ID: "x"}}}, want: "--clear x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			p.ApplyDefaults()
			in := tc.in
			in.Now = now
			got := strings.Join(LocalBlockers(&p, in), "\n")
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("blockers %q, want %q", got, tc.want)
			}
		})
	}
}

// fakeSystemd records calls and fails on demand.
type fakeSystemd struct {
	calls       []string
	healthErrs  []error // popped per WaitHealthy
	restartErrs []error
}

func (f *fakeSystemd) DaemonReload(context.Context) error {
	f.calls = append(f.calls, "reload")
	return nil
}
func (f *fakeSystemd) Restart(context.Context, string, time.Duration) error {
	f.calls = append(f.calls, "restart")
	if len(f.restartErrs) > 0 {
		err := f.restartErrs[0]
		f.restartErrs = f.restartErrs[1:]
		return err
	}
	return nil
}
func (f *fakeSystemd) WaitHealthy(context.Context, string, sdbus.HealthOptions) error {
	f.calls = append(f.calls, "health")
	if len(f.healthErrs) > 0 {
		err := f.healthErrs[0]
		f.healthErrs = f.healthErrs[1:]
		return err
	}
	return nil
}

type recReporter struct{ results []string }

func (r *recReporter) Report(_ context.Context, rep journal.Report) {
	r.results = append(r.results, rep.Result)
}

func TestExecutor(t *testing.T) {
	oldHard := map[string]string{"nodefs.available": "10%"}
	newHard := map[string]string{"nodefs.available": "5%"}
	cases := []struct {
		name       string
		healthErrs []error
		verifyFail map[string]bool // "new"/"old" fails
		wantErr    error
		wantState  string
		wantFile   string
		wantResult string
	}{
		{name: "applied", wantState: journal.StateDone, wantFile: "new", wantResult: journal.ResultApplied},
		{name: "unhealthy: rolled back", healthErrs: []error{errors.New("restart loop")}, wantErr: ErrRolledBack, wantState: journal.StateRolledBack, wantFile: "old", wantResult: journal.ResultRolledBack},
		{name: "not effective: rolled back", verifyFail: map[string]bool{"new": true}, wantErr: ErrRolledBack, wantState: journal.StateRolledBack, wantFile: "old", wantResult: journal.ResultRolledBack},
		{name: "rollback fails too", verifyFail: map[string]bool{"new": true, "old": true}, wantErr: ErrRollbackFailed, wantState: journal.StateFailed, wantFile: "old", wantResult: journal.ResultFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := hostfs.Root(t.TempDir())
			if err := os.MkdirAll(root.Path("/etc/x"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(root.Path("/etc/x/a.conf"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			j, err := journal.Open(root, "/state", nil)
			if err != nil {
				t.Fatal(err)
			}
			sd := &fakeSystemd{healthErrs: tc.healthErrs}
			rep := &recReporter{}
			e := &Executor{Journal: j, Systemd: sd, Log: discard(), Reporter: rep, Timeout: 5 * time.Second,
				Verify: func(_ context.Context, want map[string]string) error {
					which := "old"
					if maps.Equal(want, newHard) {
						which = "new"
					}
					if tc.verifyFail[which] {
						return errors.New("configz differs")
					}
					return nil
				}}
			plan := &kubeletcfg.WritePlan{Method: kubeletcfg.MethodSystemdDropIn, UnitChanged: true,
				Files: []kubeletcfg.FileWrite{{Path: "/etc/x/a.conf", Before: []byte("old"), After: []byte("new"), Perm: 0o644}}}
			op, err := e.Apply(context.Background(), plan, oldHard, newHard)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			got, _ := j.Load(op.ID)
			if got.State != tc.wantState {
				t.Errorf("state %s, want %s", got.State, tc.wantState)
			}
			if b, _ := os.ReadFile(root.Path("/etc/x/a.conf")); string(b) != tc.wantFile {
				t.Errorf("file %q, want %q", b, tc.wantFile)
			}
			if len(rep.results) != 1 || rep.results[0] != tc.wantResult {
				t.Errorf("reports %v, want [%s]", rep.results, tc.wantResult)
			}
			if rs, _ := j.Restarts(); len(rs) == 0 {
				t.Error("restart not recorded")
			}
		})
	}
}

func TestRecover(t *testing.T) {
	cases := []struct {
		name      string
		fileNow   string // content on disk at recovery
		step      string
		wantState string
		wantFile  string
		wantCalls string
	}{
		{name: "crash after write: finish", fileNow: "new", step: StepWrite, wantState: journal.StateDone, wantFile: "new", wantCalls: "reload restart health"},
		{name: "crash after restart: verify only", fileNow: "new", step: StepRestart, wantState: journal.StateDone, wantFile: "new", wantCalls: "health"},
		{name: "crash during write: roll back", fileNow: "old", step: "", wantState: journal.StateRolledBack, wantFile: "old", wantCalls: "reload restart health"},
		{name: "changed by someone else: failed", fileNow: "other", step: StepReload, wantState: journal.StateFailed, wantFile: "other", wantCalls: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := hostfs.Root(t.TempDir())
			p := root.Path("/etc/a.conf")
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			j, _ := journal.Open(root, "/state", nil)
			op, _ := j.Begin(journal.KindThresholdRewrite, map[string]any{"old": map[string]string{"a": "1"}, "new": map[string]string{"a": "2"}})
			if err := j.WriteFile(op, "/etc/a.conf", []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.step != "" {
				_ = j.Step(op, tc.step, "")
			}
			if err := os.WriteFile(p, []byte(tc.fileNow), 0o644); err != nil {
				t.Fatal(err)
			}
			sd := &fakeSystemd{}
			e := &Executor{Journal: j, Systemd: sd, Log: discard(), Verify: func(context.Context, map[string]string) error { return nil }}
			_ = e.Recover(context.Background())
			got, _ := j.Load(op.ID)
			if got.State != tc.wantState {
				t.Errorf("state %s, want %s", got.State, tc.wantState)
			}
			if b, _ := os.ReadFile(p); string(b) != tc.wantFile {
				t.Errorf("file %q, want %q", b, tc.wantFile)
			}
			if c := strings.Join(sd.calls, " "); c != tc.wantCalls {
				t.Errorf("calls %q, want %q", c, tc.wantCalls)
			}
			if left, _ := j.Unfinished(); len(left) != 0 {
				t.Errorf("still unfinished: %d", len(left))
			}
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestRewriteStepNamesAreStable: the threshold rewrite's step names are persisted in journals
// on nodes; recovery after an upgrade reads them.
func TestRewriteStepNamesAreStable(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{StepWrite, "write"}, {StepReload, "reload"}, {StepRestart, "restart"}, {StepVerify, "verify"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("step %q, want %q", tc.got, tc.want)
			}
		})
	}
}
