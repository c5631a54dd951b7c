package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
)

// TestHistoryKeeper: the history file is written under the host root at most every
// historyEvery (always when forced), a new daemon restores it, and a corrupt or foreign file
// is logged and ignored, never fatal.
func TestHistoryKeeper(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	newMonitor := func() *monitor.Monitor {
		m, err := monitor.New(monitor.Config{
			Layout:     &monitor.Layout{Filesystems: []monitor.Filesystem{{Role: monitor.RoleNodeFs, Path: "/var/lib/kubelet", HostPath: dir, Dev: st.Dev}}},
			Thresholds: []kubeletcfg.Threshold{{Signal: "nodefs.available", Kind: kubeletcfg.Hard, Raw: "10%", Value: kubeletcfg.Value{Percentage: 0.1}}},
			HostRoot:   hostfs.Root(root),
			Now:        func() time.Time { return now },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	const node = "/var/lib/evictguard/fill-history.json"
	file := filepath.Join(root, node)

	m := newMonitor()
	h := newHistoryKeeper(hostfs.Root(root), node, m, log)
	h.restore(now)
	var first []byte
	for i := range 6 {
		now = now.Add(time.Second)
		if _, err := m.Step(t.Context()); err != nil {
			t.Fatal(err)
		}
		h.save(now, false)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("step %d: no history file: %v", i, err)
		}
		if i == 0 {
			first = b
		} else if !bytes.Equal(b, first) {
			t.Errorf("step %d: the history file was rewritten within %s", i, historyEvery)
		}
	}
	h.save(now, true)
	if b, _ := os.ReadFile(file); bytes.Equal(b, first) {
		t.Error("a forced save did not write")
	}

	m2 := newMonitor()
	newHistoryKeeper(hostfs.Root(root), node, m2, log).restore(now)
	if !strings.Contains(logs.String(), "fill-rate history restored") || !strings.Contains(logs.String(), "predictors=") {
		t.Errorf("restore not logged:\n%s", logs.String())
	}

	if err := os.WriteFile(file, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	newHistoryKeeper(hostfs.Root(root), node, newMonitor(), log).restore(now)
	if !strings.Contains(logs.String(), "fill-rate history not used") {
		t.Errorf("a corrupt file was not reported:\n%s", logs.String())
	}
	if newHistoryKeeper(hostfs.Root(root), "", m, log) != nil {
		t.Error("no --history-file should keep nothing")
	}
}
