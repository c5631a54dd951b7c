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

// TestDiscoverPicksTheNodesKubelet: with several kubelet processes and no unit to tell them
// apart (kubelets of nested clusters, a test's), the one registered under this node's name
// (--hostname-override, either spelling) is the node's, whatever its PID.
func TestDiscoverPicksTheNodesKubelet(t *testing.T) {
	tests := []struct {
		name, node, wantRoot string
	}{
		{name: "node named with =", node: "node-b", wantRoot: "/tmp/b/root"},
		{name: "node named with a separate word", node: "node-c", wantRoot: "/tmp/c/root"},
		{name: "no kubelet of that name: the lowest PID", node: "node-x", wantRoot: "/tmp/a/root"},
		{name: "no node name: the lowest PID", wantRoot: "/tmp/a/root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for pid, argv := range map[string]string{
				"11": "/usr/bin/kubelet\x00--root-dir=/tmp/a/root\x00--hostname-override=node-a\x00",
				"12": "/usr/bin/kubelet\x00--root-dir=/tmp/b/root\x00--hostname-override=node-b\x00",
				"13": "/usr/bin/kubelet\x00--root-dir=/tmp/c/root\x00--hostname-override\x00node-c\x00",
			} {
				if err := os.MkdirAll(filepath.Join(root, "proc", pid), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "proc", pid, "cmdline"), []byte(argv), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			eff, err := Discover(context.Background(), Options{HostRoot: hostfs.Root(root), Version: "1.37", NodeName: tc.node})
			if err != nil {
				t.Fatal(err)
			}
			if eff.RootDir != tc.wantRoot {
				t.Errorf("RootDir %q, want %q (sources %q)", eff.RootDir, tc.wantRoot, eff.Sources)
			}
		})
	}
}
