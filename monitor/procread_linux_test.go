package monitor

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
)

func TestReadProcFile(t *testing.T) {
	dir := t.TempDir()
	var buf []byte
	for _, size := range []int{0, 10, 4095, 4096, 4097, 70_000} {
		p := filepath.Join(dir, strconv.Itoa(size))
		want := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readProcFile(p, &buf)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("size %d: got %d bytes, err %v", size, len(got), err)
		}
	}
	if _, err := readProcFile(filepath.Join(dir, "missing"), &buf); !os.IsNotExist(err) {
		t.Errorf("missing file: err = %v, want not exist", err)
	}
	// A real /proc file (generated on read, reported size 0).
	want, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skip(err)
	}
	if got, err := readProcFile("/proc/self/mountinfo", &buf); err != nil || !bytes.Equal(got, want) {
		t.Errorf("/proc/self/mountinfo: %d bytes (err %v), os.ReadFile %d", len(got), err, len(want))
	}
}

// TestPIDMaxCache: min(pid_max, threads-max) is re-read once pidMaxTTL has passed.
func TestPIDMaxCache(t *testing.T) {
	root := t.TempDir()
	write := func(f, v string) {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/sys/kernel/pid_max", "4194304")
	write("proc/sys/kernel/threads-max", "1000")
	write("proc/loadavg", "0.00 0.01 0.05 1/234 5678")
	var c pidMaxCache
	var buf []byte
	t0 := time.Unix(1000, 0)
	for _, step := range []struct {
		at               time.Time
		threadsMax       string
		wantAvail, wantC int64
	}{
		{t0, "", 1000 - 234, 1000},
		{t0.Add(pidMaxTTL / 2), "2000", 1000 - 234, 1000}, // cached
		{t0.Add(pidMaxTTL), "", 2000 - 234, 2000},         // re-read
	} {
		if step.threadsMax != "" {
			write("proc/sys/kernel/threads-max", step.threadsMax)
		}
		a, capacity, err := pidAvailable(hostfs.Root(root), &buf, &c, step.at)
		if err != nil || a != step.wantAvail || capacity != step.wantC {
			t.Errorf("at %s: %d of %d (err %v), want %d of %d", step.at.Sub(t0), a, capacity, err, step.wantAvail, step.wantC)
		}
	}
}
