package monitor

import (
	"math"
	"slices"
	"time"
)

// PredictorConfig bounds the history a Predictor keeps.
type PredictorConfig struct {
	// MaxSamples is the most samples kept (default 60). The cost of a fit is
	// O(MaxSamples² log MaxSamples), so keep it small.
	MaxSamples int
	// Window drops samples older than this (default 5m).
	Window time.Duration
	// MinSamples and MinSpan are needed before a rate is given (defaults 5 and 3s).
	MinSamples int
	MinSpan    time.Duration
}

func (c PredictorConfig) withDefaults() PredictorConfig {
	if c.MaxSamples <= 0 {
		c.MaxSamples = 60
	}
	if c.MaxSamples < 3 {
		c.MaxSamples = 3
	}
	if c.Window <= 0 {
		c.Window = 5 * time.Minute
	}
	if c.MinSamples <= 0 {
		c.MinSamples = 5
	}
	if c.MinSpan <= 0 {
		c.MinSpan = 3 * time.Second
	}
	return c
}

type point struct {
	t float64 // seconds since the predictor's epoch
	v float64
}

// Predictor estimates how fast a free quantity (available bytes, free inodes) is being
// consumed, robustly against one-off bursts and deletions.
//
// Method:
//
//  1. Keep the last MaxSamples samples within Window (a ring, no allocation per sample).
//  2. Take the consecutive increments Δᵢ = vᵢ − vᵢ₋₁ as rates rᵢ = Δᵢ/Δtᵢ. Their median m and
//     median absolute deviation (MAD) describe the steady behaviour.
//  3. An increment is a *burst* (an image pull: a sudden drop; a log rotation or image GC: a
//     sudden rise) when |rᵢ − m| exceeds max(6·1.4826·MAD, 3·|m|, a small floor) **and** the
//     next increment is not a jump in the same direction (two in a row are a new regime,
//     e.g. a runaway writer starting, and are kept), **and** bursts are rare (at most 10 % of
//     the increments, at least one allowed). Frequent "bursts" are how the quantity moves
//     (a logger flushing every few seconds) and are kept, so the average rate stays right.
//  4. Bursts are replaced by m·Δtᵢ, which turns each into a level shift: the current level is
//     still the real one, but the slope is not bent by it.
//  5. The rate is the Theil–Sen estimator (median of all pairwise slopes) of the adjusted
//     series. It tolerates noise and the odd outlier that step 3 let through, and reacts to a
//     new regime within about half a window.
//
// The consumption rate is −slope. Time to a threshold is (current − threshold)/consumption,
// to the *eviction threshold*, not to zero; it is null when the quantity is not being
// consumed (rate ≤ 0) or there is not enough history yet.
type Predictor struct {
	cfg   PredictorConfig
	epoch time.Time
	buf   []point // ring of samples, oldest first after normalize()
	start int
	n     int

	// the last fit, valid until the next Add
	fitted  bool
	fitRate float64
	fitOK   bool

	// scratch space reused between fits
	rates, adj, slopes []float64
	burst              []bool
}

// NewPredictor returns an empty predictor.
func NewPredictor(cfg PredictorConfig) *Predictor {
	cfg = cfg.withDefaults()
	return &Predictor{cfg: cfg, buf: make([]point, cfg.MaxSamples)}
}

// Reset forgets the history (e.g. when the filesystem behind a role changed).
func (p *Predictor) Reset() { p.start, p.n, p.fitted = 0, 0, false }

// Len is the number of samples held.
func (p *Predictor) Len() int { return p.n }

func (p *Predictor) at(i int) point { return p.buf[(p.start+i)%len(p.buf)] }

// Add records a sample of the free quantity at t. Samples not after the last one are ignored.
func (p *Predictor) Add(t time.Time, v float64) {
	if p.n == 0 && p.epoch.IsZero() {
		p.epoch = t
	}
	x := t.Sub(p.epoch).Seconds()
	if p.n > 0 && x <= p.at(p.n-1).t {
		return
	}
	p.fitted = false
	if p.n == len(p.buf) {
		p.start = (p.start + 1) % len(p.buf)
		p.n--
	}
	p.buf[(p.start+p.n)%len(p.buf)] = point{x, v}
	p.n++
	// drop samples that fell out of the window
	for p.n > 0 && x-p.at(0).t > p.cfg.Window.Seconds() {
		p.start = (p.start + 1) % len(p.buf)
		p.n--
	}
}

// Rate returns the consumption rate per second (positive = the free quantity shrinks) and
// whether there is enough history for one.
func (p *Predictor) Rate() (float64, bool) {
	if !p.fitted {
		p.fitRate, p.fitOK = p.fit()
		p.fitted = true
	}
	return p.fitRate, p.fitOK
}

func (p *Predictor) fit() (float64, bool) {
	n := p.n
	if n < p.cfg.MinSamples || n < 3 || p.at(n-1).t-p.at(0).t < p.cfg.MinSpan.Seconds() {
		return 0, false
	}
	// 2. increments as rates
	p.rates = p.rates[:0]
	for i := 1; i < n; i++ {
		a, b := p.at(i-1), p.at(i)
		p.rates = append(p.rates, (b.v-a.v)/(b.t-a.t))
	}
	sorted := append(p.slopes[:0], p.rates...)
	m := median(sorted)
	for i := range sorted {
		sorted[i] = math.Abs(p.rates[i] - m)
	}
	mad := median(sorted)
	p.slopes = sorted

	// 3. bursts
	span := p.at(n-1).t - p.at(0).t
	level := math.Abs(p.at(n - 1).v)
	floor := 1e-6*level/math.Max(span, 1) + 1e-9
	limit := math.Max(6*1.4826*mad, math.Max(3*math.Abs(m), floor))
	p.burst = slices.Grow(p.burst[:0], len(p.rates))[:len(p.rates)]
	jump := func(i int) int {
		d := p.rates[i] - m
		if math.Abs(d) <= limit {
			return 0
		}
		if d > 0 {
			return 1
		}
		return -1
	}
	bursts := 0
	for i := range p.rates {
		j := jump(i)
		p.burst[i] = j != 0 && (i+1 >= len(p.rates) || jump(i+1) != j) && (i == 0 || jump(i-1) != j)
		if p.burst[i] {
			bursts++
		}
	}
	if bursts > max(1, len(p.rates)/10) {
		clear(p.burst)
	}

	// 4. adjusted series
	p.adj = append(p.adj[:0], p.at(0).v)
	for i := 1; i < n; i++ {
		a, b := p.at(i-1), p.at(i)
		d := b.v - a.v
		if p.burst[i-1] {
			d = m * (b.t - a.t)
		}
		p.adj = append(p.adj, p.adj[i-1]+d)
	}

	// 5. Theil–Sen
	p.slopes = p.slopes[:0]
	for i := 0; i < n; i++ {
		ti := p.at(i).t
		for j := i + 1; j < n; j++ {
			p.slopes = append(p.slopes, (p.adj[j]-p.adj[i])/(p.at(j).t-ti))
		}
	}
	return -median(p.slopes), true
}

// SecondsTo returns the predicted seconds until the free quantity, now current, falls to
// threshold: 0 when it already has, nil when it is not being consumed or the history is short.
func (p *Predictor) SecondsTo(current, threshold float64) *float64 {
	rate, ok := p.Rate()
	return secondsTo(current, threshold, rate, ok)
}

// maxPrediction caps predictions: beyond a year, "not approaching" is the honest answer.
const maxPrediction = 365 * 24 * time.Hour

func secondsTo(current, threshold, rate float64, ok bool) *float64 {
	if current < threshold {
		zero := 0.0
		return &zero
	}
	if !ok || rate <= 0 {
		return nil
	}
	s := (current - threshold) / rate
	if s > maxPrediction.Seconds() {
		return nil
	}
	return &s
}

// median sorts xs in place and returns its median (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	h := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[h]
	}
	return (xs[h-1] + xs[h]) / 2
}
