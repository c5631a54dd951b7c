package monitor

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/kubeletcfg"
)

func pct(signal string, p float32, raw string) kubeletcfg.Threshold {
	return kubeletcfg.Threshold{Signal: signal, Kind: kubeletcfg.Hard, Raw: raw, Value: kubeletcfg.Value{Percentage: p}}
}

func qty(signal, raw string) kubeletcfg.Threshold {
	q := resource.MustParse(raw)
	return kubeletcfg.Threshold{Signal: signal, Kind: kubeletcfg.Hard, Raw: raw, Value: kubeletcfg.Value{Quantity: &q}}
}

func TestEvaluateOne(t *testing.T) {
	const capBytes = 1_000_000_000
	tests := []struct {
		name      string
		th        kubeletcfg.Threshold
		obs       Observation
		wantState State
		wantThr   int64
		wantTTS   *float64
	}{
		{
			name: "float32 percentage, strictly below", th: pct("nodefs.available", 0.1, "10%"),
			// float32(0.1) = 0.100000001490116…: threshold is 100000001, not 100000000
			obs:       Observation{Available: 100_000_001, Capacity: capBytes},
			wantState: StateWarning, wantThr: 100_000_001,
		},
		{
			name: "one byte under is breached", th: pct("nodefs.available", 0.1, "10%"),
			obs:       Observation{Available: 100_000_000, Capacity: capBytes},
			wantState: StateBreached, wantThr: 100_000_001,
		},
		{
			name: "plenty of room", th: pct("imagefs.available", 0.15, "15%"),
			obs:       Observation{Available: 800_000_000, Capacity: capBytes},
			wantState: StateOK, wantThr: 150_000_005,
		},
		{
			name: "quantity threshold within margin", th: qty("nodefs.available", "100Mi"),
			obs:       Observation{Available: 120 << 20, Capacity: capBytes},
			wantState: StateWarning, wantThr: 100 << 20,
		},
		{
			name: "approaching within the horizon", th: pct("nodefs.available", 0.1, "10%"),
			obs:       Observation{Available: 500_000_000, Capacity: capBytes, Rate: 1_000_000, RateOK: true},
			wantState: StateWarning, wantThr: 100_000_001, wantTTS: ptr(399.999999),
		},
		{
			name: "approaching slowly", th: pct("nodefs.available", 0.1, "10%"),
			obs:       Observation{Available: 500_000_000, Capacity: capBytes, Rate: 100, RateOK: true},
			wantState: StateOK, wantThr: 100_000_001, wantTTS: ptr(3999999.99),
		},
		{
			name: "inodes", th: pct("nodefs.inodesFree", 0.05, "5%"),
			obs:       Observation{Available: 99, Capacity: 2000},
			wantState: StateBreached, wantThr: 100,
		},
		{
			name: "statfs failed", th: pct("nodefs.available", 0.1, "10%"),
			obs:       Observation{Err: errors.New("statfs timed out")},
			wantState: StateUnknown,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEvaluator(EvalConfig{WarnHorizon: time.Hour, WarnMargin: 0.05})
			got := e.Evaluate(time.Unix(0, 0), []kubeletcfg.Threshold{tc.th}, func(string) (Observation, bool) { return tc.obs, true })[0]
			if got.State != tc.wantState || got.ThresholdQuantity != tc.wantThr {
				t.Fatalf("state %s thresholdQuantity %d, want %s %d (%+v)", got.State, got.ThresholdQuantity, tc.wantState, tc.wantThr, got)
			}
			if got.Headroom != got.Observed-got.ThresholdQuantity {
				t.Errorf("headroom %d != observed−threshold", got.Headroom)
			}
			switch {
			case tc.wantTTS == nil && got.SecondsToThreshold != nil && tc.wantState != StateBreached:
				t.Errorf("secondsToThreshold = %v, want null", *got.SecondsToThreshold)
			case tc.wantTTS != nil && (got.SecondsToThreshold == nil || abs(*got.SecondsToThreshold-*tc.wantTTS) > 1):
				t.Errorf("secondsToThreshold = %v, want %v", got.SecondsToThreshold, *tc.wantTTS)
			}
		})
	}
}

// TestHysteresis drives one signal through a sequence of observations and checks states.
func TestHysteresis(t *testing.T) {
	const capBytes = 1000
	th := pct("nodefs.available", 0.1, "10%") // threshold 100 (float32: 100.000001 → 100)
	thMR := th
	thMR.MinimumReclaim = "50"
	type step struct {
		at    time.Duration
		avail int64
		want  State
	}
	tests := []struct {
		name  string
		th    kubeletcfg.Threshold
		steps []step
	}{
		{name: "hovering at the threshold does not flap", th: th, steps: []step{
			{0, 500, StateOK},
			{1 * time.Second, 99, StateBreached},
			{2 * time.Second, 101, StateBreached}, // held for BreachHold (10s here)
			{3 * time.Second, 99, StateBreached},
			{4 * time.Second, 101, StateBreached},
			{12 * time.Second, 101, StateBreached}, // last met at 3s: held until 13s
			{14 * time.Second, 101, StateWarning},
		}},
		{name: "minimum reclaim keeps it met", th: thMR, steps: []step{
			{0, 99, StateBreached},
			{20 * time.Second, 140, StateBreached}, // 140 < 100+50: still met (kubelet)
			{40 * time.Second, 160, StateWarning},  // unmet since 40s, but previous met at 20s > hold
		}},
		{name: "warning band", th: th, steps: []step{
			{0, 149, StateWarning},                 // headroom 49 < 50 margin
			{1 * time.Second, 155, StateWarning},   // 55 < 62.5 exit band
			{2 * time.Second, 170, StateOK},        // 70 ≥ 62.5
			{3 * time.Second, 155, StateOK},        // 55 ≥ 50: not entering again
			{4 * time.Second, 140, StateWarning},   // 40 < 50
			{5 * time.Second, 1000, StateOK},       //
			{6 * time.Second, 0, StateBreached},    //
			{7 * time.Second, 1000, StateBreached}, // hold
			{17 * time.Second, 1000, StateOK},      // hold passed, plenty of room
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEvaluator(EvalConfig{WarnMargin: 0.05, ExitBand: 0.25, BreachHold: 10 * time.Second})
			for i, s := range tc.steps {
				got := e.Evaluate(time.Unix(0, 0).Add(s.at), []kubeletcfg.Threshold{tc.th}, func(string) (Observation, bool) {
					return Observation{Available: s.avail, Capacity: capBytes}, true
				})[0]
				if got.State != s.want {
					t.Fatalf("step %d (t=%s avail=%d): state %s, want %s", i, s.at, s.avail, got.State, s.want)
				}
			}
		})
	}
}

func TestEvaluateUnobserved(t *testing.T) {
	e := NewEvaluator(EvalConfig{})
	got := e.Evaluate(time.Now(), []kubeletcfg.Threshold{qty("allocatableMemory.available", "100Mi")}, func(string) (Observation, bool) { return Observation{}, false })
	if got[0].State != StateUnknown || got[0].Error == "" {
		t.Fatalf("got %+v, want unknown with an error", got[0])
	}
}

func TestMinReclaimQuantity(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		cap  int64
		want int64
	}{{"", 100, 0}, {"500Mi", 0, 500 << 20}, {"5%", 1000, 50}, {"bogus", 10, 0}} {
		if got := minReclaimQuantity(tc.raw, tc.cap); got != tc.want {
			t.Errorf("minReclaimQuantity(%q, %d) = %d, want %d", tc.raw, tc.cap, got, tc.want)
		}
	}
}

func TestContainerFsThresholds(t *testing.T) {
	base := []kubeletcfg.Threshold{
		pct("nodefs.available", 0.1, "10%"), pct("imagefs.available", 0.15, "15%"),
		pct("containerfs.available", 0.5, "50%"),
	}
	tests := []struct {
		name             string
		version          string
		dedicated, split bool
		want             string // containerfs.available's Raw, "" for none
		wantWarn         bool
	}{
		{"single disk copies nodefs", "1.35.0", false, false, "10%", true},
		{"dedicated imagefs copies imagefs", "1.35", true, false, "15%", true},
		{"split copies nodefs", "1.35", true, true, "10%", true},
		{"old kubelet has none", "1.7.5", true, false, "50%", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, warns := ContainerFsThresholds(base, tc.version, tc.dedicated, tc.split)
			var raw []string
			for _, th := range got {
				if th.Signal == "containerfs.available" {
					raw = append(raw, th.Raw)
				}
			}
			if len(raw) != 1 || raw[0] != tc.want {
				t.Fatalf("containerfs.available = %v, want [%s]", raw, tc.want)
			}
			if (len(warns) > 0) != tc.wantWarn {
				t.Fatalf("warnings %v, want some: %v", warns, tc.wantWarn)
			}
		})
	}
}

func ptr(f float64) *float64 { return &f }

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
