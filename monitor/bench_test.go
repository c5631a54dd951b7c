package monitor

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/evictguard/evictguard/kubeletcfg"
)

// BenchmarkCycle measures one full Monitor.Step on this machine's own filesystems (host root
// "/": nodefs, imagefs, containerfs and the log dirs that exist): statfs of every distinct
// filesystem, the log walk's per-step budget, memory and pid reads, evaluation of the kubelet
// 1.30+ default thresholds plus containerfs copies, and the Theil–Sen fits over full windows.
func BenchmarkCycle(b *testing.B) {
	m, layout := benchMonitor(b)
	b.ReportAllocs()
	b.ReportMetric(float64(len(layout.Filesystems)), "filesystems")
	b.ReportMetric(float64(len(m.Thresholds())), "signals")
	for b.Loop() {
		if _, err := m.Step(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPredictorRate is one Theil–Sen fit over a full 60-sample window.
func BenchmarkPredictorRate(b *testing.B) {
	p := series(60, time.Second, func(i int) float64 { return float64(1e9 - i*1e6) })
	b.ReportAllocs()
	for b.Loop() {
		p.fitted = false
		p.Rate()
	}
}

// benchMonitor is a Monitor over this machine's filesystems with full predictor windows.
func benchMonitor(b *testing.B) (*Monitor, *Layout) {
	b.Helper()
	layout, err := DiscoverFilesystems(b.Context(), DiscoverOptions{HostRoot: "/", Timeout: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ths := append(defaultThresholds(), qty(kubeletcfg.SignalPIDAvailable, "1000"))
	m, err := New(Config{Layout: layout, Thresholds: ths, HostRoot: "/", Predict: PredictorConfig{MaxSamples: 60}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	// fill the predictors' windows so every fit is full size
	for range 70 {
		if _, err := m.Step(b.Context()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	return m, layout
}

// BenchmarkScrape is one /metrics request as `evictguard run` serves it (the collector over
// the latest snapshot, the Go and process collectors, gzip as Prometheus asks), without the
// network.
func BenchmarkScrape(b *testing.B) {
	m, _ := benchMonitor(b)
	reg, err := NewRegistry(NewCollector(m, CollectorOptions{}))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := NewRemediationMetrics(reg, nil, nil); err != nil {
		b.Fatal(err)
	}
	h := NewHandler(reg, m, HandlerOptions{})
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
		_, _ = io.Copy(io.Discard, w.Body)
	}
}
