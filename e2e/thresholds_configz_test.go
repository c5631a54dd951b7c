package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// configzEviction is the eviction part of a real kubelet's /configz.
type configzEviction struct {
	EvictionHard            map[string]string `json:"evictionHard"`
	EvictionSoft            map[string]string `json:"evictionSoft"`
	EvictionSoftGracePeriod map[string]string `json:"evictionSoftGracePeriod"`
	EvictionMinimumReclaim  map[string]string `json:"evictionMinimumReclaim"`
}

// TestThresholdsMatchConfigz starts a real kubelet for each configuration and checks that
// `evictguard thresholds` — discovering the kubelet from /proc like on a node — computes
// exactly what the kubelet reports on /configz: the same hard and soft maps (less the
// "0%"/"100%" values the kubelet ignores), grace periods and minimum reclaims. It also checks
// the source evictguard names for one threshold per case, and that it reports no mismatch.
func TestThresholdsMatchConfigz(t *testing.T) {
	harness.RequireRoot(t)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	cases := []struct {
		name string
		opts harness.KubeletOptions
		// wantHard is what /configz must show (a sanity check of the case itself).
		wantHard map[string]string
		// sourceOf: signal/kind → substring its source must contain.
		sourceOf map[string]string
		// warning: substring one warning must contain ("" = none required).
		warning string
	}{
		{
			name:     "flags only: no hard thresholds since 1.26",
			opts:     harness.KubeletOptions{NoConfigFile: true},
			wantHard: map[string]string{},
		},
		{
			name: "config without evictionHard: five Linux defaults",
			wantHard: map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
				"imagefs.available": "15%", "imagefs.inodesFree": "5%"},
			sourceOf: map[string]string{"nodefs.available/hard": "default (kubelet 1.37"},
		},
		{
			name:     "partial map drops the other defaults",
			opts:     harness.KubeletOptions{ConfigExtra: "evictionHard:\n  nodefs.available: \"5%\"\n"},
			wantHard: map[string]string{"nodefs.available": "5%"},
			sourceOf: map[string]string{"nodefs.available/hard": "config.yaml:"},
			warning:  "memory.available",
		},
		{
			name: "partial map with mergeDefaultEvictionSettings",
			opts: harness.KubeletOptions{ConfigExtra: "mergeDefaultEvictionSettings: true\nevictionHard:\n  nodefs.available: \"5%\"\n"},
			wantHard: map[string]string{"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%",
				"imagefs.available": "15%", "imagefs.inodesFree": "5%"},
			sourceOf: map[string]string{"nodefs.available/hard": "config.yaml:", "memory.available/hard": "default"},
		},
		{
			name: "config-dir drop-ins merge per key and null deletes",
			opts: harness.KubeletOptions{DropIns: map[string]string{
				"10-memory.conf": "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard:\n  memory.available: 500Mi\n",
				"20-inodes.conf": "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard:\n  imagefs.inodesFree: null\n",
			}},
			wantHard: map[string]string{"memory.available": "500Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
				"imagefs.available": "15%"},
			sourceOf: map[string]string{"memory.available/hard": "10-memory.conf:", "nodefs.available/hard": "default"},
		},
		{
			name: "flag overrides the config file's whole map",
			opts: harness.KubeletOptions{
				ConfigExtra: "evictionHard:\n  memory.available: 200Mi\n  nodefs.available: \"10%\"\n",
				Flags:       []string{"--eviction-hard=nodefs.available<5%"},
			},
			wantHard: map[string]string{"nodefs.available": "5%"},
			sourceOf: map[string]string{"nodefs.available/hard": "flag --eviction-hard"},
			warning:  "--eviction-hard",
		},
		{
			name:     "repeated flags accumulate",
			opts:     harness.KubeletOptions{Flags: []string{"--eviction-hard=memory.available<200Mi", "--eviction-hard=nodefs.available<7%,nodefs.inodesFree<3%"}},
			wantHard: map[string]string{"memory.available": "200Mi", "nodefs.available": "7%", "nodefs.inodesFree": "3%"},
			sourceOf: map[string]string{"memory.available/hard": "flag --eviction-hard", "nodefs.available/hard": "flag --eviction-hard"},
		},
		{
			name: "soft thresholds with grace periods and minimum reclaim",
			opts: harness.KubeletOptions{ConfigExtra: "evictionSoft:\n  nodefs.available: \"15%\"\n  imagefs.available: 2Gi\n" +
				"evictionSoftGracePeriod:\n  nodefs.available: 1m30s\n  imagefs.available: 2m\n" +
				"evictionMinimumReclaim:\n  nodefs.available: 500Mi\n" +
				"evictionPressureTransitionPeriod: 1m\n"},
			wantHard: map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
				"imagefs.available": "15%", "imagefs.inodesFree": "5%"},
			sourceOf: map[string]string{"nodefs.available/soft": "config.yaml:"},
		},
		{
			name:     "quantities",
			opts:     harness.KubeletOptions{ConfigExtra: "evictionHard:\n  memory.available: 256Mi\n  nodefs.available: 1Gi\n  nodefs.inodesFree: \"1000\"\n  imagefs.available: 2G\n"},
			wantHard: map[string]string{"memory.available": "256Mi", "nodefs.available": "1Gi", "nodefs.inodesFree": "1000", "imagefs.available": "2G"},
			sourceOf: map[string]string{"nodefs.available/hard": "config.yaml:"},
		},
		{
			name:     "0% and 100% disable a signal",
			opts:     harness.KubeletOptions{ConfigExtra: "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: \"0%\"\n  imagefs.available: \"100%\"\n  nodefs.inodesFree: \"5%\"\n"},
			wantHard: map[string]string{"memory.available": "100Mi", "nodefs.available": "0%", "imagefs.available": "100%", "nodefs.inodesFree": "5%"},
			sourceOf: map[string]string{"nodefs.inodesFree/hard": "config.yaml:"},
		},
		{
			name: "flags-only with eviction flags and soft grace flags",
			opts: harness.KubeletOptions{NoConfigFile: true, Flags: []string{
				"--eviction-hard=memory.available<150Mi,nodefs.available<8%",
				"--eviction-soft=nodefs.available<12%", "--eviction-soft-grace-period=nodefs.available=45s",
				"--eviction-minimum-reclaim=nodefs.available=1Gi",
			}},
			wantHard: map[string]string{"memory.available": "150Mi", "nodefs.available": "8%"},
			sourceOf: map[string]string{"nodefs.available/soft": "flag --eviction-soft"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Containerd = c
			k := harness.StartKubelet(t, tc.opts)
			assertMatchesConfigz(t, k, tc.wantHard, tc.sourceOf, tc.warning, "--kubelet-cmdline", strings.Join(k.Args[1:], " "))
			// Discovery from /proc must find the same kubelet and give the same answer — when
			// it is the only kubelet on the machine (other test binaries may run their own).
			if n := kubeletProcesses(t); n == 1 {
				assertMatchesConfigz(t, k, tc.wantHard, tc.sourceOf, tc.warning)
			} else {
				t.Logf("%d kubelet processes on this machine: /proc discovery not checked for this case", n)
			}
		})
	}
}

// assertMatchesConfigz runs `evictguard thresholds -o json --configz URL [extra…]` and
// compares its result with the kubelet's /configz independently of evictguard's own check.
func assertMatchesConfigz(t *testing.T, k *harness.Kubelet, wantHard map[string]string, sourceOf map[string]string, warning string, extra ...string) {
	t.Helper()
	cz, raw := kubeletConfigz(t, k)
	if !reflect.DeepEqual(nonNil(cz.EvictionHard), wantHard) {
		t.Fatalf("the kubelet's /configz evictionHard = %v, want %v (the test case is wrong)", cz.EvictionHard, wantHard)
	}

	args := append([]string{"thresholds", "-o", "json", "--configz", k.ConfigzURL()}, extra...)
	stdout, stderr, code := runEvictguard(t, args...)
	if code != 0 {
		t.Fatalf("evictguard %v exited %d\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
	}
	sources := compareWithConfigz(t, cz, raw, stdout)
	for key, sub := range sourceOf {
		if !strings.Contains(sources[key], sub) {
			t.Errorf("source of %s = %q, want it to contain %q", key, sources[key], sub)
		}
	}
	got := decodeThresholds(t, stdout)
	if warning != "" && !containsAny(got.Warnings, warning) {
		t.Errorf("no warning mentions %q; warnings: %v", warning, got.Warnings)
	}
}

// kubeletConfigz reads the kubelet's /configz: its eviction settings and the raw answer.
func kubeletConfigz(t *testing.T, k *harness.Kubelet) (configzEviction, []byte) {
	t.Helper()
	raw, err := k.ConfigzRaw()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		KubeletConfig configzEviction `json:"kubeletconfig"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.KubeletConfig, raw
}

// compareWithConfigz checks `evictguard thresholds -o json` output against the kubelet's
// /configz (cz, decoded from raw) and returns each threshold's source by signal/kind.
func compareWithConfigz(t *testing.T, cz configzEviction, raw []byte, stdout string) map[string]string {
	t.Helper()
	got := decodeThresholds(t, stdout)
	differs := false
	if len(got.Mismatches) > 0 {
		t.Errorf("evictguard reported mismatches: %v", got.Mismatches)
		differs = true
	}
	maps := map[string]map[string]string{"hard": {}, "soft": {}, "grace": {}, "reclaim": {}}
	sources := map[string]string{}
	for _, th := range got.Thresholds {
		sources[th.Signal+"/"+th.Kind] = th.Source
		if th.Signal == "allocatableMemory.available" && strings.Contains(th.Source, "auto-added") {
			continue // the kubelet adds it internally; /configz does not show it
		}
		maps[th.Kind][th.Signal] = th.Value
		if th.Kind == "soft" && th.GracePeriod != "" {
			maps["grace"][th.Signal] = th.GracePeriod
		}
		if th.MinimumReclaim != "" {
			maps["reclaim"][th.Signal] = th.MinimumReclaim
		}
	}
	want := map[string]map[string]string{
		"hard":    enabled(cz.EvictionHard),
		"soft":    enabled(cz.EvictionSoft),
		"grace":   restrict(cz.EvictionSoftGracePeriod, enabled(cz.EvictionSoft)),
		"reclaim": restrict(cz.EvictionMinimumReclaim, union(enabled(cz.EvictionHard), enabled(cz.EvictionSoft))),
	}
	for _, kind := range []string{"hard", "soft", "grace", "reclaim"} {
		if !reflect.DeepEqual(maps[kind], want[kind]) {
			t.Errorf("%s: evictguard %v, kubelet /configz %v", kind, maps[kind], want[kind])
			differs = true
		}
	}
	if differs {
		t.Logf("evictguard output:\n%s\nconfigz: %s", stdout, raw)
	}
	return sources
}

// enabled drops the values the kubelet ignores ("0%" and "100%" disable a signal).
func enabled(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != "0%" && v != "100%" {
			out[k] = v
		}
	}
	return out
}

func restrict(m, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if _, ok := keys[k]; ok {
			out[k] = v
		}
	}
	return out
}

func union(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestThresholdsKubeadmUnitUnderSystemd runs a real kubelet as kubelet.service under the
// sandboxed systemd manager, configured the kubeadm way: a drop-in with Environment= (percent
// signs escaped as %%, like the seed incident's KUBELET_EVICTION_POLICY_ARGS) and
// EnvironmentFile= for kubeadm-flags.env and /etc/default/kubelet, an ExecStart= reset and a
// new ExecStart with $VARs. evictguard must compute from the unit files alone (no /proc under
// the host root) what the kubelet reports on /configz, and the same again from /proc.
func TestThresholdsKubeadmUnitUnderSystemd(t *testing.T) {
	harness.RequireRoot(t)
	sd := harness.StartSystemd(t)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	k := harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: c})
	flagsEnv := filepath.Join(k.Dir, "kubeadm-flags.env")
	defaultKubelet := filepath.Join(k.Dir, "default-kubelet")
	writeFile(t, flagsEnv, fmt.Sprintf("KUBELET_KUBEADM_ARGS=\"--root-dir=%s --hostname-override=%s --cert-dir=%s\"\n",
		k.RootDir, k.NodeName, filepath.Join(k.Dir, "pki")))
	writeFile(t, defaultKubelet, "KUBELET_EXTRA_ARGS=--eviction-hard=nodefs.inodesFree<4% --v=2\n")
	sd.WriteUnit(t, "kubelet.service", "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\n\n[Service]\nExecStart="+k.Binary+
		"\nRestart=always\nRestartSec=1\n")
	sd.WriteDropIn(t, "kubelet.service", "10-kubeadm.conf", fmt.Sprintf(`# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_CONFIG_ARGS=--config=%s"
Environment="KUBELET_EVICTION_POLICY_ARGS=--eviction-hard=memory.available<300Mi,nodefs.available<5%%%%"
EnvironmentFile=-%s
EnvironmentFile=-%s
ExecStart=
ExecStart=%s $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS $KUBELET_EVICTION_POLICY_ARGS
`, k.ConfigPath, flagsEnv, defaultKubelet, k.Binary))
	conn := sd.Conn(t)
	ctx := context.Background()
	if err := conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, "kubelet.service", "replace", done); err != nil {
		t.Fatalf("start kubelet.service: %v", err)
	}
	if r := <-done; r != "done" {
		t.Fatalf("start kubelet.service: job %s", r)
	}
	t.Cleanup(func() {
		stopped := make(chan string, 1)
		if _, err := conn.StopUnitContext(context.Background(), "kubelet.service", "replace", stopped); err == nil {
			<-stopped
		}
		if err := harness.UnmountBelow(k.RootDir); err != nil {
			t.Errorf("unmount kubelet root: %v", err)
		}
	})
	err := harness.WaitFor(ctx, 90*time.Second, nil, func() error {
		_, err := k.ConfigzRaw()
		return err
	})
	if err != nil {
		t.Fatalf("kubelet.service never served /configz: %v", err)
	}
	want := map[string]string{"memory.available": "300Mi", "nodefs.available": "5%", "nodefs.inodesFree": "4%"}

	// A host root that shows the sandbox's unit directory as /etc/systemd/system and the real
	// /tmp and /var (where the kubelet's files and binary are), but no /proc: evictguard has to
	// read the unit, its drop-in and environment files.
	hostRoot := harness.TempDir(t, "hostroot")
	for link, target := range map[string]string{"etc/systemd/system": sd.UnitDir, "tmp": "/tmp", "var": "/var"} {
		p := filepath.Join(hostRoot, link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	sourceOf := map[string]string{
		"memory.available/hard":  "10-kubeadm.conf:4 via $KUBELET_EVICTION_POLICY_ARGS",
		"nodefs.inodesFree/hard": "via $KUBELET_EXTRA_ARGS",
	}
	assertMatchesConfigz(t, k, want, sourceOf, "", "--host-root", hostRoot)
	// And from the running process, as on a node (when it is the only kubelet here).
	if kubeletProcesses(t) == 1 {
		assertMatchesConfigz(t, k, want, map[string]string{"memory.available/hard": "cmdline"}, "")
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// kubeletProcesses counts running processes whose executable is named kubelet.
func kubeletProcesses(t testing.TB) int {
	t.Helper()
	return len(harness.Processes(func(_ int, argv []string) bool { return filepath.Base(argv[0]) == "kubelet" }))
}
