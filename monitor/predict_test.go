package monitor

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// series feeds a predictor with samples every step from f(i) and returns it.
func series(n int, step time.Duration, f func(i int) float64) *Predictor {
	p := NewPredictor(PredictorConfig{MaxSamples: 60, Window: time.Hour})
	t0 := time.Unix(1_700_000_000, 0)
	for i := range n {
		p.Add(t0.Add(time.Duration(i)*step), f(i))
	}
	return p
}

func TestPredictorRate(t *testing.T) {
	const gib = 1 << 30
	const rate = 10 << 20 // consumption, bytes/s
	rng := rand.New(rand.NewPCG(1, 2))
	// steady fill with each increment off by up to ±10 %
	var level float64 = 50 * gib
	increments := make([]float64, 200)
	for i := range increments {
		increments[i] = rate * (0.9 + 0.2*rng.Float64())
	}
	noisy := func(i int) float64 {
		v := level
		for k := 0; k < i; k++ {
			v -= increments[k]
		}
		return v
	}
	steady := func(i int) float64 { return 50*gib - float64(i)*rate }

	tests := []struct {
		name     string
		n        int
		f        func(i int) float64
		want     float64
		tol      float64 // relative, or absolute bytes/s when want == 0
		wantNone bool
	}{
		{name: "steady fill ±10%", n: 60, f: noisy, want: rate, tol: 0.05},
		{name: "flat", n: 60, f: func(int) float64 { return 20 * gib }, want: 0, tol: 1},
		{name: "image pull burst mid-window", n: 60, f: func(i int) float64 {
			v := steady(i)
			if i >= 30 {
				v -= 2 * gib // a 2 GiB pull between samples 29 and 30
			}
			return v
		}, want: rate, tol: 0.02},
		{name: "log rotation frees space", n: 60, f: func(i int) float64 {
			v := steady(i)
			if i >= 45 {
				v += 5 * gib
			}
			return v
		}, want: rate, tol: 0.02},
		{name: "burst on a flat disk", n: 60, f: func(i int) float64 {
			if i >= 20 {
				return 10 * gib
			}
			return 12 * gib
		}, want: 0, tol: 1},
		{name: "deletion on a flat disk", n: 60, f: func(i int) float64 {
			if i >= 40 {
				return 14 * gib
			}
			return 12 * gib
		}, want: 0, tol: 1},
		{name: "periodic flush is a rate, not bursts", n: 60, f: func(i int) float64 {
			// 50 MiB every 5th second: 10 MiB/s on average
			return 50*gib - float64(i/5)*50*(1<<20)
		}, want: rate, tol: 0.15},
		{name: "freeing steadily", n: 60, f: func(i int) float64 { return 10*gib + float64(i)*rate }, want: -rate, tol: 0.01},
		{name: "too few samples", n: 3, f: steady, wantNone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := series(tc.n, time.Second, tc.f)
			got, ok := p.Rate()
			if tc.wantNone {
				if ok {
					t.Fatalf("Rate() = %v, want none", got)
				}
				return
			}
			if !ok {
				t.Fatal("Rate() gave no rate")
			}
			if tc.want == 0 {
				if math.Abs(got) > tc.tol {
					t.Fatalf("Rate() = %v, want 0 ± %v", got, tc.tol)
				}
				return
			}
			if rel := math.Abs(got-tc.want) / math.Abs(tc.want); rel > tc.tol {
				t.Fatalf("Rate() = %.0f, want %.0f ± %.0f%% (off by %.1f%%)", got, tc.want, tc.tol*100, rel*100)
			}
		})
	}
}

func TestPredictorNewRegime(t *testing.T) {
	// A runaway writer starts: the first jumps must not be discarded as bursts for long.
	p := series(60, time.Second, func(i int) float64 {
		if i < 30 {
			return 100 << 30
		}
		return float64(100<<30) - float64(i-29)*(100<<20)
	})
	got, ok := p.Rate()
	if !ok || got < 50<<20 {
		t.Fatalf("Rate() = %v, %v; want a rate reflecting the new 100 MiB/s regime (≥ 50 MiB/s)", got, ok)
	}
}

func TestSecondsTo(t *testing.T) {
	p := series(30, time.Second, func(i int) float64 { return 1000 - float64(i)*10 })
	// current 710, threshold 200, rate 10/s → 51 s
	got := p.SecondsTo(710, 200)
	if got == nil || math.Abs(*got-51) > 0.01 {
		t.Fatalf("SecondsTo = %v, want 51", got)
	}
	if got := p.SecondsTo(100, 200); got == nil || *got != 0 {
		t.Fatalf("SecondsTo below threshold = %v, want 0", got)
	}
	flat := series(30, time.Second, func(int) float64 { return 1000 })
	if got := flat.SecondsTo(1000, 200); got != nil {
		t.Fatalf("SecondsTo when flat = %v, want nil", *got)
	}
}

func TestPredictorWindow(t *testing.T) {
	p := NewPredictor(PredictorConfig{MaxSamples: 10, Window: 5 * time.Second, MinSamples: 2, MinSpan: time.Second})
	t0 := time.Unix(0, 0)
	for i := range 20 {
		p.Add(t0.Add(time.Duration(i)*time.Second), float64(i))
	}
	if p.Len() != 6 {
		t.Fatalf("Len = %d, want 6 (samples within 5s)", p.Len())
	}
	p.Add(t0.Add(3*time.Second), 0) // out of order: ignored
	if r, ok := p.Rate(); !ok || r != -1 {
		t.Fatalf("Rate = %v %v, want -1", r, ok)
	}
}
