package monitor

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/kubeletcfg"
)

// needRoot skips tests that mount filesystems.
func needRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts tmpfs: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounts tmpfs: needs root (run the tests as root, e.g. in the CI container)")
	}
}

// mountTmpfs mounts a real tmpfs at dir (created) and unmounts it in cleanup.
func mountTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount tmpfs %s (%s): %v", dir, opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

func writeFile(t testing.TB, path string, size int) {
	t.Helper()
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
}

func defaultThresholds() []kubeletcfg.Threshold {
	return []kubeletcfg.Threshold{
		qty("memory.available", "100Mi"),
		pct("nodefs.available", 0.1, "10%"), pct("nodefs.inodesFree", 0.05, "5%"),
		pct("imagefs.available", 0.15, "15%"), pct("imagefs.inodesFree", 0.05, "5%"),
	}
}

func TestTmpfsStatfsMatchesKernel(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "fs")
	mountTmpfs(t, dir, "size=64m,nr_inodes=2000")
	writeFile(t, filepath.Join(dir, "a"), 5<<20+123)
	writeFile(t, filepath.Join(dir, "b"), 1)

	u, err := NewSampler(time.Second).Usage(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := Usage{
		Capacity: int64(st.Blocks) * st.Frsize, Available: int64(st.Bavail) * st.Frsize,
		Inodes: int64(st.Files), InodesFree: int64(st.Ffree),
	}
	u.Time = time.Time{}
	if u != want {
		t.Fatalf("sampled %+v, statfs says %+v", u, want)
	}
	if u.Capacity != 64<<20 || u.Inodes != 2000 {
		t.Fatalf("capacity %d inodes %d, want 64 MiB and 2000", u.Capacity, u.Inodes)
	}
}

// TestTmpfsFillRate: a writer fills nodefs at 10 MiB/s; once stable, secondsToThreshold
// predicts the crossing within ±10 %, and the crossing is reported within one interval.
func TestTmpfsFillRate(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	kubelet := filepath.Join(root, "var/lib/kubelet")
	mountTmpfs(t, kubelet, "size=128m,nr_inodes=2000")

	layout, err := DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), DockerSocket: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	const interval = 100 * time.Millisecond
	th := qty("nodefs.available", "16Mi")
	m, err := New(Config{
		Layout: layout, Thresholds: []kubeletcfg.Threshold{th}, HostRoot: hostfs.Root(root),
		Predict: PredictorConfig{MaxSamples: 40, Window: 10 * time.Second, MinSpan: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	first, err := m.Step(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	startAvail := first.Signals[0].Observed
	crossAt := (startAvail - 16<<20) / (1 << 20) // MiB written when available drops below 16Mi
	crossed := make(chan time.Time, 1)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { // 1 MiB every 100 ms
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		buf := make([]byte, 1<<20)
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			case <-tick.C:
			}
			if err := os.WriteFile(filepath.Join(kubelet, "f"+strconv.FormatInt(i, 10)), buf, 0o644); err != nil {
				done <- err
				return
			}
			if i+1 == crossAt+1 {
				crossed <- time.Now()
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	}()

	var predicted time.Time
	var breachedAt time.Time
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		time.Sleep(interval)
		s, err := m.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		sig := s.Signals[0]
		if predicted.IsZero() && time.Since(start) > 3*time.Second {
			if sig.SecondsToThreshold == nil {
				t.Fatalf("no prediction after 3s of steady filling: %+v", sig)
			}
			predicted = s.Time.Add(time.Duration(*sig.SecondsToThreshold * float64(time.Second)))
			t.Logf("at %s: observed %d, rate %.0f B/s, secondsToThreshold %.2f", s.Time.Sub(start), sig.Observed, *sig.FillRate, *sig.SecondsToThreshold)
		}
		if sig.State == StateBreached {
			breachedAt = s.Time
			break
		}
	}
	if breachedAt.IsZero() || predicted.IsZero() {
		t.Fatal("never breached")
	}
	var crossedAt time.Time
	select {
	case crossedAt = <-crossed:
	default:
		t.Fatal("breached before the writer crossed the threshold")
	}
	if lag := breachedAt.Sub(crossedAt); lag > interval+50*time.Millisecond {
		t.Errorf("breach reported %s after the crossing write, want within one interval (%s)", lag, interval)
	}
	// compare the prediction with the real crossing, measured from when it was made
	horizonPred := predicted.Sub(start)
	horizonReal := crossedAt.Sub(start)
	t.Logf("predicted crossing at +%s, real crossing at +%s", horizonPred, horizonReal)
	if e := math.Abs(horizonPred.Seconds()-horizonReal.Seconds()) / (horizonReal.Seconds() - 3); e > 0.10 {
		t.Errorf("prediction off by %.1f%% of the remaining time, want ≤ 10%%", e*100)
	}
}

// TestTmpfsInodeExhaustion: many empty files exhaust inodes while bytes stay free.
func TestTmpfsInodeExhaustion(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	kubelet := filepath.Join(root, "var/lib/kubelet")
	mountTmpfs(t, kubelet, "size=64m,nr_inodes=2000")
	layout, err := DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), DockerSocket: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Layout: layout, Thresholds: defaultThresholds(), HostRoot: hostfs.Root(root)})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := m.Step(t.Context())
	if st := signal(t, s, "nodefs.inodesFree"); st.State != StateOK {
		t.Fatalf("empty fs: %+v", st)
	}
	var n int
	for ; ; n++ {
		f, err := os.Create(filepath.Join(kubelet, fmt.Sprint("e", n)))
		if errors.Is(err, unix.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	s, _ = m.Step(t.Context())
	var st unix.Statfs_t
	if err := unix.Statfs(kubelet, &st); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nodefs.inodesFree", "imagefs.inodesFree", "containerfs.inodesFree"} {
		sig := signal(t, s, name)
		if sig.State != StateBreached || sig.Observed != int64(st.Ffree) || sig.Capacity != 2000 {
			t.Errorf("%s after %d files: %+v, want breached with observed = f_ffree %d", name, n, sig, st.Ffree)
		}
	}
	if sig := signal(t, s, "nodefs.available"); sig.State != StateOK {
		t.Errorf("bytes are free, but nodefs.available is %s", sig.State)
	}
}

// TestTmpfsImageFsDetection: imagefs shares nodefs's device or has its own, as st_dev says,
// with docker's data root from a legacy daemon.json "graph" in a fixture host root.
func TestTmpfsImageFsDetection(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name          string
		graph         string
		wantMount     string
		wantDedicated bool
	}{
		{"shared", "/var/lib/docker", "/var", false},
		{"separate /data", "/data/docker", "/data", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mountTmpfs(t, filepath.Join(root, "var"), "size=64m,nr_inodes=2000")
			mountTmpfs(t, filepath.Join(root, "data"), "size=32m,nr_inodes=1000")
			mkdirs(t, root, "var/lib/kubelet", "var/lib/docker/containers", "data/docker/containers", "etc/docker", "var/log/pods")
			if err := os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte(`{"graph":"`+tc.graph+`","storage-driver":"aufs"}`), 0o644); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(root, "var/lib/kubelet/x"), 40<<20) // nodefs 62.5% used
			writeFile(t, filepath.Join(root, "data/docker/containers/y.log"), 1<<20)

			layout, err := DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), DockerSocket: "/nonexistent"})
			if err != nil {
				t.Fatal(err)
			}
			if layout.Runtime != RuntimeDocker || layout.DedicatedImageFs != tc.wantDedicated {
				t.Fatalf("runtime %q dedicated %v, want docker %v", layout.Runtime, layout.DedicatedImageFs, tc.wantDedicated)
			}
			img := layout.ByRole(RoleImageFs)
			if img.Path != tc.graph || img.Mountpoint != tc.wantMount || img.FsType != "tmpfs" {
				t.Errorf("imagefs %+v", img)
			}
			m, err := New(Config{Layout: layout, Thresholds: defaultThresholds(), HostRoot: hostfs.Root(root), Logs: LogConfig{Budget: 100}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, _ := m.Step(t.Context())
			node, image := signal(t, s, "nodefs.available"), signal(t, s, "imagefs.available")
			if same := node.Observed == image.Observed && node.Capacity == image.Capacity; same == tc.wantDedicated {
				t.Errorf("nodefs %d/%d vs imagefs %d/%d: same=%v with dedicated=%v", node.Observed, node.Capacity, image.Observed, image.Capacity, same, tc.wantDedicated)
			}
			// containerfs follows imagefs when it is dedicated, else nodefs; either way the
			// observation is the imagefs one (the runtime holds containers with images).
			cfs := signal(t, s, "containerfs.available")
			wantThr := node.Threshold
			if tc.wantDedicated {
				wantThr = image.Threshold
			}
			if cfs.Threshold != wantThr || cfs.Observed != image.Observed {
				t.Errorf("containerfs %+v, want threshold %s observed %d", cfs, wantThr, image.Observed)
			}
			// docker's container log dir is attributed to the filesystem it lives on
			for _, fs := range s.Filesystems {
				if fs.Role == RoleLogs && fs.Path == tc.graph+"/containers" {
					want := "nodefs"
					if tc.wantDedicated {
						want = "imagefs"
					}
					if fs.SameAs != want {
						t.Errorf("%s attributed to %q, want %q", fs.Path, fs.SameAs, want)
					}
					if fs.LogBytes == nil || (tc.wantDedicated && *fs.LogBytes != 1<<20) {
						t.Errorf("%s log bytes %v", fs.Path, fs.LogBytes)
					}
				}
			}
		})
	}
}

func signal(t *testing.T, s *Snapshot, name string) SignalStatus {
	t.Helper()
	for _, sig := range s.Signals {
		if sig.Signal == name {
			return sig
		}
	}
	t.Fatalf("no signal %s in %+v", name, s.Signals)
	return SignalStatus{}
}

// TestTmpfsSetLayoutAfterDataRootMove: docker's data root moves from nodefs to its own
// filesystem (daemon.json rewritten, as a migration does); after a re-discovery, SetLayout
// makes imagefs.available follow the new filesystem while nodefs keeps its signal state and
// fill-rate history.
func TestTmpfsSetLayoutAfterDataRootMove(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	mountTmpfs(t, filepath.Join(root, "var"), "size=64m,nr_inodes=2000")
	mountTmpfs(t, filepath.Join(root, "data"), "size=32m,nr_inodes=1000")
	mkdirs(t, root, "var/lib/kubelet", "var/lib/docker/containers", "data/docker/containers", "etc/docker", "var/log/pods")
	daemonJSON := filepath.Join(root, "etc/docker/daemon.json")
	if err := os.WriteFile(daemonJSON, []byte(`{"data-root":"/var/lib/docker"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "var/lib/kubelet/x"), 40<<20)
	discover := func() *Layout {
		t.Helper()
		l, err := DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), DockerSocket: "/nonexistent"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	now := time.Unix(1_000_000, 0)
	m, err := New(Config{Layout: discover(), Thresholds: defaultThresholds(), HostRoot: hostfs.Root(root), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	step := func() *Snapshot {
		t.Helper()
		now = now.Add(time.Second)
		s, err := m.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for range 5 {
		step()
	}
	before := signal(t, step(), "nodefs.available")
	if m.Layout().DedicatedImageFs {
		t.Fatal("imagefs on nodefs reported as dedicated")
	}

	if err := os.WriteFile(daemonJSON, []byte(`{"data-root":"/data/docker"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.SetLayout(discover()); err != nil {
		t.Fatal(err)
	}
	s := step()
	var data unix.Statfs_t
	if err := unix.Statfs(filepath.Join(root, "data"), &data); err != nil {
		t.Fatal(err)
	}
	node, image := signal(t, s, "nodefs.available"), signal(t, s, "imagefs.available")
	tests := []struct {
		name string
		ok   bool
		got  any
	}{
		{"layout dedicated", m.Layout().DedicatedImageFs, m.Layout()},
		{"imagefs on /data", image.Capacity == int64(data.Blocks)*data.Frsize && image.Observed == int64(data.Bavail)*data.Frsize, image},
		{"nodefs state kept", node.State == before.State && node.Since.Equal(before.Since), node},
		{"nodefs history kept", node.FillRate != nil, node.FillRate},
		{"containerfs follows the dedicated imagefs", signal(t, s, "containerfs.available").Threshold == image.Threshold, signal(t, s, "containerfs.available")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("got %+v", tc.got)
			}
		})
	}
	if err := m.SetLayout(&Layout{}); err == nil {
		t.Error("a layout without nodefs was accepted")
	}
}
