package monitor

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSamplerHungMount: a statfs that never returns (a hung NFS server) times out, and later
// calls fail fast instead of starting more goroutines on the same mount.
func TestSamplerHungMount(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	s := NewSampler(50 * time.Millisecond)
	s.statfs = func(path string) (Usage, error) {
		calls.Add(1)
		if path == "/nfs" {
			<-release
		}
		return Usage{Capacity: 10, Available: 5}, nil
	}
	before := runtime.NumGoroutine()
	if _, err := s.Usage(t.Context(), "/nfs"); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("first call: %v, want a timeout", err)
	}
	for range 100 {
		if _, err := s.Usage(t.Context(), "/nfs"); !errors.Is(err, ErrStatfsPending) {
			t.Fatalf("call while hung: %v, want ErrStatfsPending", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d statfs calls on the hung mount, want 1", n)
	}
	if g := runtime.NumGoroutine(); g > before+2 {
		t.Fatalf("goroutines grew from %d to %d", before, g)
	}
	// other mounts are unaffected
	if u, err := s.Usage(t.Context(), "/ok"); err != nil || u.Available != 5 {
		t.Fatalf("healthy mount: %+v %v", u, err)
	}
	close(release)
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := s.Usage(t.Context(), "/nfs"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("mount recovered but still failing: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
