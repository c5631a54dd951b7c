package monitor

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLogScannerBounded: a tree of 500 files is measured over several bounded steps, is not
// re-walked before the refresh period, and its growth shows once passes accumulate.
func TestLogScannerBounded(t *testing.T) {
	dir := t.TempDir()
	for d := range 5 {
		sub := filepath.Join(dir, fmt.Sprint("pod", d), "c")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 100 {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprint(f, ".log")), make([]byte, 4096), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	dev, err := deviceOf(dir)
	if err != nil {
		t.Skip(err)
	}
	s := newLogScanner(dir, dev)
	defer s.close()
	now := time.Unix(0, 0)
	steps := 0
	for {
		used := s.step(now, 50, time.Minute)
		if used > 50 {
			t.Fatalf("step used %d entries, budget 50", used)
		}
		steps++
		if !s.active {
			break
		}
		if steps > 100 {
			t.Fatal("walk never finished")
		}
	}
	bytes, files, _, scanning := s.stats()
	if steps < 10 || files == nil || *files != 500 || *bytes < 500*4096 || scanning {
		t.Fatalf("after %d steps: files %v bytes %v scanning %v", steps, deref(files), deref(bytes), scanning)
	}
	if used := s.step(now.Add(30*time.Second), 50, time.Minute); used != 0 {
		t.Fatalf("re-walked before the refresh period (%d entries)", used)
	}
	// grow by 1 MiB per minute over three more passes
	for pass := 1; pass <= 3; pass++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint("grow", pass)), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		at := now.Add(time.Duration(pass) * time.Minute)
		for s.step(at, 1000, time.Minute) > 0 && s.active {
		}
	}
	_, _, growth, _ := s.stats()
	if growth == nil || *growth < 0.9*(1<<20)/60 || *growth > 1.1*(1<<20)/60 {
		t.Fatalf("growth %v B/s, want ≈ %d", deref(growth), (1<<20)/60)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
