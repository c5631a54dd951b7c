package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/e2e/harness"
)

// statusDoc is the part of `evictguard status -o json` (README.md#commands) these tests read.
type statusDoc struct {
	Runtime     string `json:"runtime"`
	Dedicated   bool   `json:"dedicatedImageFs"`
	Filesystems []struct {
		Role, Path, Mountpoint, SameAs, Source string
		CapacityBytes, AvailableBytes          int64
		Inodes, InodesFree                     int64
	} `json:"filesystems"`
	Signals []struct {
		Signal, Kind, Filesystem, State string
		Observed, ThresholdQuantity     int64
		Capacity                        int64
	} `json:"signals"`
	Warnings []string `json:"warnings"`
}

// TestImageFsWithRealRuntimes runs a real dockerd and a real containerd with their data root
// either on a tmpfs of its own (a dedicated imagefs, as in the incident after the move to
// /data) or on the kubelet root dir's filesystem (shared, a single disk), and checks that
// `evictguard status` finds the runtime's root through its API (docker /info, CRI
// ImageFsInfo), tells the two layouts apart, and evaluates imagefs signals on the right
// filesystem's statfs numbers.
func TestImageFsWithRealRuntimes(t *testing.T) {
	cases := []struct {
		runtime   string
		dedicated bool
	}{
		{"docker", true},
		{"docker", false},
		{"containerd", true},
		{"containerd", false},
	}
	for _, tc := range cases {
		name := tc.runtime + "/shared"
		if tc.dedicated {
			name = tc.runtime + "/dedicated"
		}
		t.Run(name, func(t *testing.T) {
			nodefs := harness.TmpFS(t, 96<<20, 5000)
			imagefs := nodefs
			if tc.dedicated {
				imagefs = harness.TmpFS(t, 160<<20, 9000)
			}
			kubeletRoot := filepath.Join(nodefs, "kubelet")
			cfgDir := harness.TempDir(t, "kubeletcfg")
			cfg := filepath.Join(cfgDir, "config.yaml")
			if err := os.WriteFile(cfg, []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"status", "-o", "json", "--runtime", tc.runtime,
				"--kubelet-cmdline", "--config=" + cfg + " --root-dir=" + kubeletRoot, "--kubelet-version", "1.37"}
			var source string
			switch tc.runtime {
			case "docker":
				d := harness.StartDocker(t, harness.DockerOptions{DataRoot: filepath.Join(imagefs, "docker")})
				args = append(args, "--docker-socket", d.Socket)
				source = "docker API DockerRootDir"
			case "containerd":
				c := harness.StartContainerd(t, harness.ContainerdOptions{Root: filepath.Join(imagefs, "containerd")})
				args = append(args, "--cri-endpoint", c.Endpoint())
				source = "CRI ImageFsInfo"
			}
			if err := os.MkdirAll(kubeletRoot, 0o755); err != nil {
				t.Fatal(err)
			}

			// The runtimes may write now and then: retry until statfs is the same before and
			// after the report, so that "equal to a direct statfs" is exact.
			var doc statusDoc
			var before, after map[string]unix.Statfs_t
			for attempt := 0; attempt < 5; attempt++ {
				before = statfsAll(t, nodefs, imagefs)
				stdout, stderr, code := runEvictguard(t, args...)
				if code != 0 {
					t.Fatalf("status exit %d\n%s\n%s", code, stdout, stderr)
				}
				after = statfsAll(t, nodefs, imagefs)
				doc = statusDoc{}
				if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
					t.Fatalf("status JSON: %v\n%s", err, stdout)
				}
				if before[nodefs] == after[nodefs] && before[imagefs] == after[imagefs] {
					break
				}
			}

			if doc.Runtime != tc.runtime || doc.Dedicated != tc.dedicated {
				t.Errorf("runtime %q dedicatedImageFs %v, want %q %v", doc.Runtime, doc.Dedicated, tc.runtime, tc.dedicated)
			}
			wantSameAs := "nodefs"
			if tc.dedicated {
				wantSameAs = ""
			}
			roles := map[string]string{}
			for _, fs := range doc.Filesystems {
				if fs.Role == "logs" {
					continue
				}
				roles[fs.Role] = fs.Mountpoint
				want, mp := nodefs, fs.Mountpoint
				switch fs.Role {
				case "nodefs":
					if fs.Path != kubeletRoot {
						t.Errorf("nodefs path %s, want %s", fs.Path, kubeletRoot)
					}
				case "imagefs":
					want = imagefs
					if fs.SameAs != wantSameAs || !strings.HasPrefix(fs.Source, source) || !strings.HasPrefix(fs.Path, imagefs+"/") {
						t.Errorf("imagefs = %+v, want a path under %s, sameAs %q, source %q", fs, imagefs, wantSameAs, source)
					}
				case "containerfs":
					want = imagefs
				}
				if mp != want {
					t.Errorf("%s mountpoint %s, want %s", fs.Role, mp, want)
				}
				st := after[want]
				if fs.CapacityBytes != int64(st.Blocks)*st.Frsize || fs.AvailableBytes != int64(st.Bavail)*st.Frsize ||
					fs.Inodes != int64(st.Files) || fs.InodesFree != int64(st.Ffree) {
					t.Errorf("%s numbers cap %d avail %d inodes %d free %d, statfs of %s says %d %d %d %d", fs.Role,
						fs.CapacityBytes, fs.AvailableBytes, fs.Inodes, fs.InodesFree, want,
						int64(st.Blocks)*st.Frsize, int64(st.Bavail)*st.Frsize, st.Files, st.Ffree)
				}
			}
			for _, r := range []string{"nodefs", "imagefs", "containerfs"} {
				if roles[r] == "" {
					t.Errorf("no %s in %+v", r, doc.Filesystems)
				}
			}

			// Every disk signal is evaluated against its own filesystem's statfs.
			seen := 0
			for _, s := range doc.Signals {
				prefix, quantity, _ := strings.Cut(s.Signal, ".")
				var on string
				switch prefix {
				case "nodefs":
					on = nodefs
				case "imagefs", "containerfs":
					// containerfs copies nodefs' thresholds on a single disk and imagefs' on a
					// dedicated one, but it is observed on the runtime's filesystem either way.
					on = imagefs
				default:
					continue
				}
				seen++
				st := after[on]
				want, capacity := int64(st.Bavail)*st.Frsize, int64(st.Blocks)*st.Frsize
				if quantity == "inodesFree" {
					want, capacity = int64(st.Ffree), int64(st.Files)
				}
				if s.Observed != want || s.Capacity != capacity {
					t.Errorf("%s/%s observed %d of %d, statfs of %s says %d of %d", s.Signal, s.Kind, s.Observed, s.Capacity, on, want, capacity)
				}
			}
			if seen != 6 {
				t.Errorf("%d disk signals, want 6 (nodefs, imagefs and containerfs, bytes and inodes): %+v", seen, doc.Signals)
			}
		})
	}
}

func statfsAll(t testing.TB, paths ...string) map[string]unix.Statfs_t {
	t.Helper()
	out := map[string]unix.Statfs_t{}
	for _, p := range paths {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			t.Fatal(err)
		}
		out[p] = st
	}
	return out
}
