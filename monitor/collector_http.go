package monitor

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a private registry with the Go and process collectors and c. Nothing
// is registered on the global default registry.
func NewRegistry(c prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		c,
	} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register collector: %w", err)
		}
	}
	return reg, nil
}

// HandlerOptions configure NewHandler.
type HandlerOptions struct {
	// MaxAge is how old the latest evaluation may be before /readyz and /healthz fail
	// (e.g. 5× the monitoring interval; default 1m).
	MaxAge time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// NewHandler serves /metrics from g, and /healthz and /readyz from src:
//
//   - /readyz is 200 once an evaluation has completed and the latest is at most MaxAge old,
//     503 otherwise (not evaluated yet, or the loop is stuck);
//   - /healthz is 200 while the process serves and the loop is not stuck: 503 only when an
//     evaluation exists and is older than MaxAge, so that a slow first discovery does not get
//     the pod killed.
func NewHandler(g prometheus.Gatherer, src Snapshotter, opts HandlerOptions) http.Handler {
	if opts.MaxAge <= 0 {
		opts.MaxAge = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	age := func() (time.Duration, bool) {
		s := src.Latest()
		if s == nil {
			return 0, false
		}
		return opts.Now().Sub(s.Time), true
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a, ok := age(); ok && a > opts.MaxAge {
			http.Error(w, fmt.Sprintf("stale: last evaluation %s ago (max %s)", a.Round(time.Second), opts.MaxAge), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		a, ok := age()
		switch {
		case !ok:
			http.Error(w, "not ready: no evaluation yet", http.StatusServiceUnavailable)
		case a > opts.MaxAge:
			http.Error(w, fmt.Sprintf("not ready: last evaluation %s ago (max %s)", a.Round(time.Second), opts.MaxAge), http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "evictguard: /metrics /healthz /readyz")
	})
	return mux
}
