package main

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
)

const gi = int64(1) << 30

func pct(signal string, kind kubeletcfg.Kind, raw string, p float32, src string) kubeletcfg.Threshold {
	return kubeletcfg.Threshold{Signal: signal, Kind: kind, Raw: raw, Value: kubeletcfg.Value{Percentage: p}, Source: src}
}

func qty(signal string, kind kubeletcfg.Kind, raw, src string) kubeletcfg.Threshold {
	q := resource.MustParse(raw)
	return kubeletcfg.Threshold{Signal: signal, Kind: kind, Raw: raw, Value: kubeletcfg.Value{Quantity: &q}, Source: src}
}

func withGrace(th kubeletcfg.Threshold, grace string) kubeletcfg.Threshold {
	th.GracePeriodRaw = grace
	return th
}

// sample evaluates ths (plus the kubelet's containerfs copies) against fixed usage with the
// monitor's own functions, as usageWarningsFor does against a statfs sample.
func sample(t *testing.T, eff *kubeletcfg.Effective, layout *monitor.Layout, usage map[monitor.Role]monitor.FilesystemStatus) ([]kubeletcfg.Threshold, *monitor.Snapshot) {
	t.Helper()
	ths, _ := monitor.ContainerFsThresholds(eff.Thresholds, eff.Version, layout.DedicatedImageFs, layout.SplitContainerFs)
	snap := &monitor.Snapshot{}
	for _, fs := range layout.Filesystems {
		st := usage[fs.Role]
		st.Filesystem = fs
		snap.Filesystems = append(snap.Filesystems, st)
	}
	ev := monitor.NewEvaluator(monitor.EvalConfig{})
	snap.Signals = ev.Evaluate(snap.Time, ths, func(signal string) (monitor.Observation, bool) {
		role, q, _ := strings.Cut(signal, ".")
		st, ok := usage[monitor.Role(role)]
		if !ok {
			return monitor.Observation{}, false
		}
		if st.Error != "" {
			return monitor.Observation{Err: errString(st.Error)}, true
		}
		o := monitor.Observation{Available: st.AvailableBytes, Capacity: st.CapacityBytes}
		if q == "inodesFree" {
			o.Available, o.Capacity = st.InodesFree, st.Inodes
		}
		return o, true
	})
	return ths, snap
}

type errString string

func (e errString) Error() string { return string(e) }

func TestUsageWarnings(t *testing.T) {
	const def = "default (kubelet 1.37, no evictionHard in /var/lib/kubelet/config.yaml)"
	defaults := []kubeletcfg.Threshold{
		qty("memory.available", kubeletcfg.Hard, "100Mi", def),
		pct("nodefs.available", kubeletcfg.Hard, "10%", 0.1, def),
		pct("nodefs.inodesFree", kubeletcfg.Hard, "5%", 0.05, def),
		pct("imagefs.available", kubeletcfg.Hard, "15%", 0.15, def),
		pct("imagefs.inodesFree", kubeletcfg.Hard, "5%", 0.05, def),
	}
	nodefs := monitor.Filesystem{Role: monitor.RoleNodeFs, Path: "/var/lib/kubelet", Mountpoint: "/", Dev: 1}
	img := func(path string, dev uint64, mp string) monitor.Filesystem {
		return monitor.Filesystem{Role: monitor.RoleImageFs, Path: path, Mountpoint: mp, Dev: dev}
	}
	shared := &monitor.Layout{Runtime: "containerd", Filesystems: []monitor.Filesystem{nodefs, img("/var/lib/containerd", 1, "/")}}
	noRuntime := &monitor.Layout{Filesystems: []monitor.Filesystem{nodefs, img("/var/lib/kubelet", 1, "/")}}
	dedicated := &monitor.Layout{Runtime: "containerd", DedicatedImageFs: true,
		Filesystems: []monitor.Filesystem{nodefs, img("/data/containerd", 2, "/data")}}
	roomy := monitor.FilesystemStatus{CapacityBytes: 100 * gi, AvailableBytes: 50 * gi, Inodes: 1000, InodesFree: 500}
	full := monitor.FilesystemStatus{CapacityBytes: 100 * gi, AvailableBytes: 8 * gi, Inodes: 1000, InodesFree: 500}
	ok := map[monitor.Role]monitor.FilesystemStatus{monitor.RoleNodeFs: roomy, monitor.RoleImageFs: roomy}

	tests := []struct {
		name   string
		ths    []kubeletcfg.Threshold
		ignore []kubeletcfg.Threshold // configured containerfs.*
		layout *monitor.Layout
		usage  map[monitor.Role]monitor.FilesystemStatus
		want   []string // one substring per warning, in order
	}{
		{
			name: "defaults, dedicated imagefs with room: nothing to say", ths: defaults, layout: dedicated, usage: ok,
		},
		{
			name: "defaults on one filesystem: imagefs thresholds fall on nodefs", ths: defaults, layout: shared, usage: ok,
			want: []string{
				"hard imagefs.available<15% (" + def + ") is evaluated against nodefs (/var/lib/kubelet, mounted at /): containerd's image store /var/lib/containerd is on the same filesystem as the kubelet root dir /var/lib/kubelet; it is stricter than nodefs.available<10%: pressure at 15 GiB available instead of 10 GiB",
				"hard imagefs.inodesFree<5% (" + def + ") is evaluated against nodefs (/var/lib/kubelet, mounted at /): containerd's image store",
			},
		},
		{
			name: "no runtime found: no separate imagefs either", ths: defaults[3:4], layout: noRuntime, usage: ok,
			want: []string{"hard imagefs.available<15% (" + def + ") is evaluated against nodefs (/var/lib/kubelet, mounted at /): no container runtime was found, so there is no separate imagefs; it is the only hard threshold on that filesystem's available"},
		},
		{
			name:   "soft imagefs threshold with a weaker nodefs one",
			ths:    []kubeletcfg.Threshold{pct("nodefs.available", kubeletcfg.Soft, "20%", 0.2, "config.yaml:9"), qty("imagefs.available", kubeletcfg.Soft, "2Gi", "config.yaml:10")},
			layout: shared, usage: ok,
			want: []string{"soft imagefs.available<2Gi (config.yaml:10) is evaluated against nodefs"},
		},
		{
			name: "nodefs breached (hard): 8% available < 10%", ths: defaults[:3], layout: dedicated,
			usage: map[monitor.Role]monitor.FilesystemStatus{monitor.RoleNodeFs: full, monitor.RoleImageFs: roomy},
			want:  []string{"hard nodefs.available<10% (" + def + ") is already breached: 8.0 GiB available on /var/lib/kubelet, mounted at /, below the threshold of 10 GiB (capacity 100 GiB); the kubelet reports DiskPressure and evicts pods now"},
		},
		{
			name:   "soft breach names the grace period; inodes are counts",
			ths:    []kubeletcfg.Threshold{withGrace(qty("nodefs.inodesFree", kubeletcfg.Soft, "600", "flag --eviction-soft in --kubelet-cmdline"), "1m30s")},
			layout: dedicated, usage: ok,
			want: []string{"soft nodefs.inodesFree<600 (flag --eviction-soft in --kubelet-cmdline) is already breached: 500 inodes free on /var/lib/kubelet, mounted at /, below the threshold of 600 (capacity 1000); the kubelet reports DiskPressure and evicts pods once it stays breached for 1m30s"},
		},
		{
			name: "imagefs breached on a dedicated imagefs", ths: defaults[3:4], layout: dedicated,
			usage: map[monitor.Role]monitor.FilesystemStatus{monitor.RoleNodeFs: roomy, monitor.RoleImageFs: full},
			want:  []string{"hard imagefs.available<15% (" + def + ") is already breached: 8.0 GiB available on /data/containerd, mounted at /data, below the threshold of 15 GiB"},
		},
		{
			name: "shared and breached: both warnings", ths: defaults[1:4], layout: shared,
			usage: map[monitor.Role]monitor.FilesystemStatus{monitor.RoleNodeFs: full, monitor.RoleImageFs: full},
			want: []string{
				"hard imagefs.available<15% (" + def + ") is evaluated against nodefs",
				"hard nodefs.available<10% (" + def + ") is already breached",
				"hard imagefs.available<15% (" + def + ") is already breached: 8.0 GiB available on /var/lib/containerd, mounted at /",
			},
		},
		{
			name:   "exactly at the threshold is not breached (the kubelet's test is threshold > available)",
			ths:    []kubeletcfg.Threshold{qty("nodefs.available", kubeletcfg.Hard, "8Gi", "x")},
			layout: dedicated,
			usage:  map[monitor.Role]monitor.FilesystemStatus{monitor.RoleNodeFs: full, monitor.RoleImageFs: full},
		},
		{
			name:   "configured containerfs on one filesystem: a copy of nodefs",
			ths:    defaults[1:2],
			ignore: []kubeletcfg.Threshold{pct("containerfs.available", kubeletcfg.Hard, "20%", 0.2, "config.yaml:7")},
			layout: &monitor.Layout{Runtime: "containerd", Filesystems: []monitor.Filesystem{nodefs, img("/var/lib/containerd", 1, "/")}},
			usage:  ok,
			want:   []string{"hard containerfs.available<20% (config.yaml:7) has no effect on this node: the kubelet uses 10% instead, copy of nodefs.available (the kubelet derives containerfs from nodefs), evaluated against nodefs (/var/lib/kubelet, mounted at /): there is no separate imagefs"},
		},
		{
			name:   "configured containerfs with nothing to copy",
			ignore: []kubeletcfg.Threshold{pct("containerfs.inodesFree", kubeletcfg.Soft, "20%", 0.2, "config.yaml:8")},
			layout: dedicated, usage: ok,
			want: []string{"soft containerfs.inodesFree<20% (config.yaml:8) has no effect on this node: the kubelet has no soft containerfs.inodesFree threshold here"},
		},
		{
			name: "a filesystem that cannot be sampled", ths: defaults[1:2], layout: dedicated,
			usage: map[monitor.Role]monitor.FilesystemStatus{monitor.RoleNodeFs: {Error: "statfs /var/lib/kubelet: timed out after 2s"}, monitor.RoleImageFs: roomy},
			want:  []string{"current usage of nodefs (/var/lib/kubelet) not checked: statfs /var/lib/kubelet: timed out after 2s"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eff := &kubeletcfg.Effective{Version: "1.37.2", Thresholds: tc.ths, IgnoredContainerFs: tc.ignore}
			evaluated, snap := sample(t, eff, tc.layout, tc.usage)
			got := usageWarnings(eff, tc.layout, evaluated, snap)
			if len(got) != len(tc.want) {
				t.Fatalf("%d warnings, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, sub := range tc.want {
				if !strings.Contains(got[i], sub) {
					t.Errorf("warning %d:\n got %s\nwant %s", i, got[i], sub)
				}
			}
		})
	}
}

// TestUsageWarningsForNoKubelet: on a host root with no kubelet and no runtime, the check
// still runs (on the host root's own filesystem) and says that imagefs is nodefs.
func TestUsageWarningsForNoKubelet(t *testing.T) {
	root := t.TempDir()
	eff, err := kubeletcfg.Discover(context.Background(), kubeletcfg.Options{HostRoot: hostfs.Root(root)})
	if err != nil {
		t.Fatal(err)
	}
	g := &globalOptions{hostRoot: root}
	got := usageWarningsFor(context.Background(), g, eff)
	if !containsSubstr(got, "hard imagefs.available<15%") || !containsSubstr(got, "no container runtime was found") {
		t.Errorf("warnings %q lack the shared-imagefs warning", got)
	}
	for _, w := range got {
		if strings.Contains(w, "not checked") {
			t.Errorf("unexpected: %s", w)
		}
	}
}

func containsSubstr(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
