package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestOldKubelet runs the second kubelet the suite builds (hack/k8s-version-old, 1.29: four
// default hard thresholds instead of 1.30's five, no mergeDefaultEvictionSettings, flags-only
// without defaults since 1.26). evictguard finds its version from the binary on the command
// line and must compute what that kubelet reports on /configz; then the incident: its root
// dir on a nearly full filesystem, where evictguard and the kubelet (registered with the API
// server, which sets DiskPressure on the Node) agree on which thresholds are breached.
func TestOldKubelet(t *testing.T) {
	harness.RequireRoot(t)
	version := harness.K8sOldVersion()
	minor := strings.Join(strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)[:2], ".")
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	fourDefaults := map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%", "imagefs.available": "15%"}

	cases := []struct {
		name     string
		opts     harness.KubeletOptions
		wantHard map[string]string
		sourceOf map[string]string
		warning  string
	}{{
		name:     "config without evictionHard: four defaults",
		wantHard: fourDefaults,
		sourceOf: map[string]string{"nodefs.available/hard": "default (kubelet " + minor, "imagefs.available/hard": "default (kubelet " + minor},
	}, {
		name:     "partial map drops the other defaults",
		opts:     harness.KubeletOptions{ConfigExtra: "evictionHard:\n  nodefs.available: \"5%\"\n"},
		wantHard: map[string]string{"nodefs.available": "5%"},
		sourceOf: map[string]string{"nodefs.available/hard": "config.yaml:"},
		warning:  "memory.available",
	}, {
		// The field came with 1.33: a 1.29 kubelet ignores it (lenient decoding) and drops the
		// defaults all the same.
		name:     "mergeDefaultEvictionSettings is not known yet",
		opts:     harness.KubeletOptions{ConfigExtra: "mergeDefaultEvictionSettings: true\nevictionHard:\n  nodefs.available: \"5%\"\n"},
		wantHard: map[string]string{"nodefs.available": "5%"},
		sourceOf: map[string]string{"nodefs.available/hard": "config.yaml:"},
	}, {
		name:     "flags only: no hard thresholds",
		opts:     harness.KubeletOptions{NoConfigFile: true},
		wantHard: map[string]string{},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Containerd, tc.opts.Version = c, version
			k := harness.StartKubelet(t, tc.opts)
			assertMatchesConfigz(t, k, tc.wantHard, tc.sourceOf, tc.warning, "--kubelet-cmdline", strings.Join(k.Args, " "))
			stdout, _, _ := runEvictguard(t, "thresholds", "-o", "json", "--kubelet-cmdline", strings.Join(k.Args, " "))
			if v := decodeThresholds(t, stdout).Kubelet.Version; v != strings.TrimPrefix(version, "v") {
				t.Errorf("evictguard found kubelet version %q, want %s (from %s --version)", v, version, k.Binary)
			}
		})
	}

	t.Run("incident: the root dir's filesystem fills", func(t *testing.T) {
		api := harness.StartAPIServer(t)
		nodefs := harness.TmpFS(t, 64<<20, 0)
		k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, Version: version, APIServer: api, NodeName: "old-node",
			RootDir: filepath.Join(nodefs, "kubelet"), Flags: []string{"--v=3"}})
		cmdline := strings.Join(k.Args, " ")
		status := func() statusSample {
			t.Helper()
			stdout, stderr, code := runEvictguard(t, "status", "-o", "json", "--kubelet-cmdline", cmdline)
			if code != 0 && code != 1 {
				t.Fatalf("status exited %d: %s", code, stderr)
			}
			var s statusSample
			if err := json.Unmarshal([]byte(stdout), &s); err != nil {
				t.Fatalf("status JSON: %v\n%s", err, stdout)
			}
			return s
		}
		state := func(s statusSample, signal string) string {
			for _, sig := range s.Signals {
				if sig.Signal == signal && sig.Kind == "hard" {
					return sig.State
				}
			}
			return "absent"
		}
		s := status()
		for _, sig := range []string{"memory.available", "allocatableMemory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available"} {
			if st := state(s, sig); st == "absent" || st == "unknown" {
				t.Errorf("%s is %s in status against kubelet %s", sig, st, version)
			}
		}
		if st := state(s, "imagefs.inodesFree"); st != "absent" {
			t.Errorf("imagefs.inodesFree is %s: kubelet %s has no such default", st, minor)
		}
		// ~92 % used, like the incident: over nodefs.available<10%. containerd's image store
		// is on another filesystem, a dedicated imagefs, which stays healthy.
		fillToAvailable(t, nodefs, 0.08)
		s = status()
		if st := state(s, "nodefs.available"); st != "breached" {
			t.Errorf("nodefs.available is %s at 8%% available, want breached", st)
		}
		if st := state(s, "imagefs.available"); st == "breached" || st == "unknown" {
			t.Errorf("imagefs.available is %s on the dedicated image filesystem", st)
		}
		if err := waitNodeCondition(api, k, "old-node", corev1.NodeDiskPressure); err != nil {
			t.Fatalf("kubelet %s never set DiskPressure: %v\n%s", version, err, k.Proc.LogTail(3000))
		}
		// The kubelet's own verdict, round by round, agrees with evictguard's.
		met := map[string]bool{}
		for _, r := range parseEvictionRounds(k.Proc.Log()) {
			for sig := range r.met {
				met[sig] = true
			}
		}
		if !met["nodefs.available"] || met["imagefs.available"] {
			t.Errorf("the kubelet's eviction manager found met %v, want nodefs.available and not imagefs.available", met)
		}
	})
}
