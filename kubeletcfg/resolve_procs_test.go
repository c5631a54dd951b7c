package kubeletcfg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// TestDiscoverPicksTheUnitsKubelet: with another kubelet process on the machine (a leftover,
// a test's, lower PID), discovery uses the one whose command line kubelet.service gives —
// also while that differs by a change not restarted into yet.
func TestDiscoverPicksTheUnitsKubelet(t *testing.T) {
	tests := []struct {
		name  string
		extra string // appended to the running kubelet's argv only
	}{
		{name: "same command line"},
		{name: "running kubelet differs from the unit (change not restarted into)", extra: "--v=4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.CopyFS(root, os.DirFS("testdata/hosts/proc-1.35")); err != nil {
				t.Fatal(err)
			}
			foreign := "/tmp/other/kubelet\x00--root-dir=/tmp/other/root\x00--config=/tmp/other/config.yaml\x00"
			if err := os.MkdirAll(filepath.Join(root, "proc/17"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "proc/17/cmdline"), []byte(foreign), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.extra != "" {
				p := filepath.Join(root, "proc/4242/cmdline")
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, append(b, []byte(tc.extra+"\x00")...), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			eff, err := Discover(context.Background(), Options{HostRoot: hostfs.Root(root), Version: "1.35"})
			if err != nil {
				t.Fatal(err)
			}
			if len(eff.Sources) == 0 || eff.Sources[0] != "/proc/4242/cmdline" || eff.RootDir != "/var/lib/kubelet" {
				t.Errorf("Sources %q, RootDir %q: want the unit's kubelet (PID 4242)", eff.Sources, eff.RootDir)
			}
			if !containsSub(eff.Warnings, "2 kubelet processes found; using PID 4242") {
				t.Errorf("warnings:\n%s", strings.Join(eff.Warnings, "\n"))
			}
		})
	}
}
