package monitor

import (
	"encoding/json"
	"fmt"
	"time"
)

// History is the fill-rate history of a Monitor's predictors, kept across a restart or an
// upgrade of the daemon (Monitor.History, Monitor.RestoreHistory): a new process that starts
// from it predicts at its first sample instead of after MinSamples intervals, so the alerts,
// Events and condition built on the prediction do not lapse while it relearns the rate.
type History struct {
	// Version is HistoryVersion; another version is ignored.
	Version int `json:"version"`
	// Series are the samples of each predictor by key: "fs/<device>/<node path>/bytes" or
	// "/inodes" for a filesystem (by device, so a different disk never inherits a history),
	// "sys/<signal>" for memory and PIDs.
	Series map[string][]HistorySample `json:"series"`
}

// HistoryVersion is the version of History's encoding.
const HistoryVersion = 1

// HistorySample is one sample of a predictor.
type HistorySample struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// DecodeHistory parses an encoded History; an unknown version is an error.
func DecodeHistory(b []byte) (*History, error) {
	var h History
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("fill-rate history: %w", err)
	}
	if h.Version != HistoryVersion {
		return nil, fmt.Errorf("fill-rate history: version %d, want %d", h.Version, HistoryVersion)
	}
	return &h, nil
}

// Samples returns the predictor's samples, oldest first.
func (p *Predictor) Samples() []HistorySample {
	out := make([]HistorySample, p.n)
	for i := range p.n {
		pt := p.at(i)
		out[i] = HistorySample{T: p.epoch.Add(time.Duration(pt.t * float64(time.Second))), V: pt.v}
	}
	return out
}

// Restore replaces the history with the samples still inside the window at now, and returns
// how many it kept. Samples after now (a clock step) are dropped.
func (p *Predictor) Restore(samples []HistorySample, now time.Time) int {
	p.Reset()
	p.epoch = time.Time{}
	for _, s := range samples {
		if s.T.After(now) || now.Sub(s.T) > p.cfg.Window {
			continue
		}
		p.Add(s.T, s.V)
	}
	return p.n
}

func groupKey(g *fsGroup, what string) string {
	return fmt.Sprintf("fs/%d/%s/%s", g.dev, g.nodePath, what)
}

// History returns the fill-rate history of every predictor. It waits for a running Step.
func (m *Monitor) History() *History {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	h := &History{Version: HistoryVersion, Series: map[string][]HistorySample{}}
	for _, g := range m.groups {
		if g.dev == 0 {
			continue // not known to be the same filesystem after a restart
		}
		h.Series[groupKey(g, "bytes")] = g.bytes.Samples()
		h.Series[groupKey(g, "inodes")] = g.inodes.Samples()
	}
	for i, sig := range sysSignals {
		h.Series["sys/"+sig] = m.sysPredict[i].Samples()
	}
	return h
}

// RestoreHistory loads h into the predictors whose filesystem (device and node path) or
// signal it names, keeping the samples inside the window at now; it returns the predictors
// restored. Call it before the first Step.
func (m *Monitor) RestoreHistory(h *History, now time.Time) int {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	n := 0
	restore := func(p *Predictor, key string) {
		if s, ok := h.Series[key]; ok && p.Restore(s, now) > 0 {
			n++
		}
	}
	for _, g := range m.groups {
		if g.dev != 0 {
			restore(g.bytes, groupKey(g, "bytes"))
			restore(g.inodes, groupKey(g, "inodes"))
		}
	}
	for i, sig := range sysSignals {
		restore(m.sysPredict[i], "sys/"+sig)
	}
	return n
}

// Encode is h as JSON, the form DecodeHistory reads.
func (h *History) Encode() ([]byte, error) { return json.Marshal(h) }
