package monitor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrStatfsPending is returned while an earlier statfs of the same path has not returned
// (a hung NFS mount): a new one is not started, so hung goroutines do not pile up.
var ErrStatfsPending = errors.New("statfs still pending")

// statfsFunc is the raw sampler: statfsUsage on Linux; tests may replace it per Sampler.
type statfsFunc func(path string) (Usage, error)

// Sampler runs statfs with a timeout. A call that times out keeps running in its goroutine;
// until it returns, further calls for that path fail fast with ErrStatfsPending.
type Sampler struct {
	timeout time.Duration
	statfs  statfsFunc
	now     func() time.Time

	mu      sync.Mutex
	pending map[string]time.Time // path → start of the statfs still running
}

// NewSampler returns a sampler with the given per-call timeout (default 2s, as cadvisor).
func NewSampler(timeout time.Duration) *Sampler {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Sampler{timeout: timeout, statfs: statfsUsage, now: time.Now, pending: map[string]time.Time{}}
}

type usageResult struct {
	u   Usage
	err error
}

// Usage samples the filesystem holding path (a path as this process sees it).
func (s *Sampler) Usage(ctx context.Context, path string) (Usage, error) {
	s.mu.Lock()
	if since, ok := s.pending[path]; ok {
		s.mu.Unlock()
		return Usage{}, fmt.Errorf("statfs %s: %w (since %s)", path, ErrStatfsPending, since.Format(time.RFC3339))
	}
	start := s.now()
	s.pending[path] = start
	s.mu.Unlock()

	ch := make(chan usageResult, 1) // buffered: a late result must not block the goroutine
	go func() {
		u, err := s.statfs(path)
		s.mu.Lock()
		delete(s.pending, path)
		s.mu.Unlock()
		ch <- usageResult{u, err}
	}()
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return Usage{}, fmt.Errorf("statfs %s: %w", path, r.err)
		}
		r.u.Time = start
		return r.u, nil
	case <-t.C:
		return Usage{}, fmt.Errorf("statfs %s: timed out after %s", path, s.timeout)
	case <-ctx.Done():
		return Usage{}, fmt.Errorf("statfs %s: %w", path, ctx.Err())
	}
}
