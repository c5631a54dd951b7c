package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestMonitorOnRealDisks runs a real kubelet (--v=3) on loop-device filesystems — ext4 with
// its 5 % of blocks reserved for root, so that f_bfree ≠ f_bavail, and xfs — in two node
// layouts: one disk for everything (imagefs shared with nodefs) and an xfs nodefs with a
// dedicated ext4 imagefs. At each fill level `evictguard status -o json` must agree with the
// kubelet: the same imagefs decision (dedicated or not, by device), the same bytes and inodes
// as its /stats/summary and as the eviction manager's observations, and the same met/not-met
// decision for every filesystem signal.
func TestMonitorOnRealDisks(t *testing.T) {
	harness.RequireRoot(t)
	cases := []struct {
		name      string
		nodefs    harness.DiskOptions
		imagefs   *harness.DiskOptions // nil: on nodefs
		inodesOn  string               // "nodefs" or "imagefs": where the inode fill runs (ext4)
		dedicated bool
	}{{
		name:     "one ext4 disk for everything",
		nodefs:   harness.DiskOptions{Size: 256 << 20, FS: "ext4", Mkfs: []string{"-N", "4096"}, Name: "root"},
		inodesOn: "nodefs",
	}, {
		name:      "xfs nodefs and a dedicated ext4 imagefs",
		nodefs:    harness.DiskOptions{Size: 320 << 20, FS: "xfs", Name: "root"},
		imagefs:   &harness.DiskOptions{Size: 256 << 20, FS: "ext4", Mkfs: []string{"-N", "4096"}, Name: "images"},
		inodesOn:  "imagefs",
		dedicated: true,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodefs := harness.LoopDisk(t, tc.nodefs)
			imagefs := nodefs
			if tc.imagefs != nil {
				imagefs = harness.LoopDisk(t, *tc.imagefs)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(imagefs.Mountpoint, &st); err != nil {
				t.Fatal(err)
			}
			if imagefs.FS == "ext4" && st.Bfree == st.Bavail {
				t.Fatalf("ext4 without reserved blocks: f_bfree = f_bavail = %d", st.Bfree)
			}
			c := harness.StartContainerd(t, harness.ContainerdOptions{Root: filepath.Join(imagefs.Mountpoint, "containerd")})
			k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, RootDir: filepath.Join(nodefs.Mountpoint, "kubelet"),
				Flags: []string{"--v=3"},
				ConfigExtra: "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: \"10%\"\n  nodefs.inodesFree: \"5%\"\n" +
					"  imagefs.available: \"15%\"\n  imagefs.inodesFree: \"5%\"\n"})
			cmdline := strings.Join(k.Args, " ")
			check := func(t *testing.T, wantMet map[string]bool) {
				t.Helper()
				r := waitEvictionRounds(t, k, time.Now(), 1)[0]
				stdout, stderr, code := runEvictguard(t, "status", "-o", "json", "--kubelet-cmdline", cmdline)
				if code != 0 && code != 1 {
					t.Fatalf("status exited %d: %s", code, stderr)
				}
				var s struct {
					statusSample
					Dedicated   bool `json:"dedicatedImageFs"`
					Filesystems []struct {
						Role           string `json:"role"`
						CapacityBytes  int64  `json:"capacityBytes"`
						AvailableBytes int64  `json:"availableBytes"`
						Inodes         int64  `json:"inodes"`
						InodesFree     int64  `json:"inodesFree"`
					} `json:"filesystems"`
				}
				if err := json.Unmarshal([]byte(stdout), &s); err != nil {
					t.Fatalf("status JSON: %v\n%s", err, stdout)
				}
				if s.Dedicated != tc.dedicated {
					t.Errorf("evictguard dedicatedImageFs=%v, want %v", s.Dedicated, tc.dedicated)
				}
				if !strings.Contains(k.Proc.Log(), fmt.Sprintf(`"FileSystem detection" DedicatedImageFs=%v`, tc.dedicated)) {
					t.Errorf("the kubelet did not log DedicatedImageFs=%v", tc.dedicated)
				}
				for _, sig := range []string{"nodefs.available", "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree"} {
					o, ok := r.observed[sig]
					g, found := hardSignal(s.statusSample, sig)
					if !ok || !found {
						t.Errorf("%s: kubelet observed %v, evictguard %v", sig, ok, found)
						continue
					}
					// The kubelet writes a few state files of its own between the two readings.
					tol := int64(256 << 10)
					if strings.HasSuffix(sig, "inodesFree") {
						tol = 8
					}
					t.Logf("%-20s kubelet %d of %d (met %v), evictguard %d of %d (met %v, %s)", sig, o.available, o.capacity, r.met[sig], g.Observed, g.Capacity, g.Met, g.State)
					if abs64(g.Observed-o.available) > tol || g.Capacity != o.capacity {
						t.Errorf("%s: evictguard %d of %d, the kubelet %d of %d", sig, g.Observed, g.Capacity, o.available, o.capacity)
					}
					if g.Met != r.met[sig] || r.met[sig] != wantMet[sig] {
						t.Errorf("%s: evictguard met=%v, the kubelet's eviction manager met=%v, expected %v", sig, g.Met, r.met[sig], wantMet[sig])
					}
				}
				// `thresholds` warns about exactly the thresholds already breached.
				tout, terr, tcode := runEvictguard(t, "thresholds", "-o", "json", "--kubelet-cmdline", cmdline)
				if tcode != 0 {
					t.Fatalf("thresholds exited %d: %s", tcode, terr)
				}
				warnings := decodeThresholds(t, tout).Warnings
				for _, sig := range []string{"nodefs.available", "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree"} {
					warned := false
					for _, w := range warnings {
						if strings.HasPrefix(w, "hard "+sig+"<") && strings.Contains(w, "is already breached") {
							warned = true
						}
					}
					if warned != wantMet[sig] {
						t.Errorf("thresholds warns %s already breached: %v, the kubelet finds it met: %v; warnings:\n%s", sig, warned, wantMet[sig], strings.Join(warnings, "\n"))
					}
				}
				sum, err := kubeletFsSummary(k)
				if err != nil {
					t.Fatal(err)
				}
				for _, fs := range s.Filesystems {
					var want fsSummary
					switch fs.Role {
					case "nodefs":
						want = sum.Node.Fs
					case "imagefs":
						want = sum.Node.Runtime.ImageFs
					default:
						continue
					}
					if fs.CapacityBytes != want.CapacityBytes || abs64(fs.AvailableBytes-want.AvailableBytes) > 256<<10 ||
						fs.Inodes != want.Inodes || abs64(fs.InodesFree-want.InodesFree) > 8 {
						t.Errorf("%s: evictguard %d/%d bytes, %d/%d inodes; /stats/summary %d/%d bytes, %d/%d inodes", fs.Role,
							fs.AvailableBytes, fs.CapacityBytes, fs.InodesFree, fs.Inodes, want.AvailableBytes, want.CapacityBytes, want.InodesFree, want.Inodes)
					}
				}
			}
			t.Run("empty", func(t *testing.T) { check(t, map[string]bool{}) })
			t.Run("imagefs at 12% available", func(t *testing.T) {
				fillToAvailable(t, imagefs.Mountpoint, 0.12)
				// 12 % is under imagefs' 15 % and, when shared, still above nodefs' 10 %.
				check(t, map[string]bool{"imagefs.available": true})
			})
			t.Run("nodefs at 6% available", func(t *testing.T) {
				fillToAvailable(t, nodefs.Mountpoint, 0.06)
				check(t, map[string]bool{"imagefs.available": true, "nodefs.available": true})
			})
			t.Run("inodes exhausted on "+tc.inodesOn, func(t *testing.T) {
				dir := nodefs.Mountpoint
				if tc.inodesOn == "imagefs" {
					dir = imagefs.Mountpoint
				}
				fillInodes(t, filepath.Join(dir, "inodes"), 0.03)
				want := map[string]bool{"imagefs.available": true, "nodefs.available": true, "imagefs.inodesFree": true}
				if !tc.dedicated {
					want["nodefs.inodesFree"] = true
				}
				check(t, want)
			})
		})
	}
}

// waitEvictionRounds waits for n complete eviction manager rounds that observed after after.
func waitEvictionRounds(t *testing.T, k *harness.Kubelet, after time.Time, n int) []evictionRound {
	t.Helper()
	var got []evictionRound
	err := harness.WaitFor(t.Context(), 90*time.Second, k.Proc, func() error {
		got = nil
		for _, r := range parseEvictionRounds(k.Proc.Log()) {
			for _, o := range r.observed {
				if o.time.After(after) {
					got = append(got, r)
					break
				}
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d eviction manager rounds after %s, want %d", len(got), after.Format(time.RFC3339Nano), n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nkubelet log tail:\n%s", err, k.Proc.LogTail(3000))
	}
	return got[:n]
}

// fillInodes creates empty files under dir until about frac of the filesystem's inodes are
// free.
func fillInodes(t *testing.T, dir string, frac float64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	n := int64(st.Ffree) - int64(frac*float64(st.Files))
	for i := int64(0); i < n; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%d", i)))
		if err != nil {
			t.Fatalf("after %d files: %v", i, err)
		}
		f.Close()
	}
}

type fsSummary struct {
	AvailableBytes int64 `json:"availableBytes"`
	CapacityBytes  int64 `json:"capacityBytes"`
	InodesFree     int64 `json:"inodesFree"`
	Inodes         int64 `json:"inodes"`
}

type fsSummaryDoc struct {
	Node struct {
		Fs      fsSummary `json:"fs"`
		Runtime struct {
			ImageFs fsSummary `json:"imageFs"`
		} `json:"runtime"`
	} `json:"node"`
}

func kubeletFsSummary(k *harness.Kubelet) (*fsSummaryDoc, error) {
	b, err := k.Get("/stats/summary")
	if err != nil {
		return nil, err
	}
	var s fsSummaryDoc
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("/stats/summary: %w", err)
	}
	return &s, nil
}
