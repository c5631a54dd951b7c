package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// node is the incident's node: nodefs (the kubelet's --root-dir) on a small tmpfs, imagefs
// (containerd's root) on another disk, with a real kubelet run as kubelet.service by the
// sandboxed systemd.
type node struct {
	*harness.KubeletUnit
	fs, state, policy string
	cri               string
}

type layout int

const (
	layoutKubeadm17 layout = iota // the seed's 1.7-era drop-in, modernised flags
	layoutKubeadmModern
	layoutConfigDir
)

const testPolicy = `dryRun: false
headroom: {percent: 3}
floor: {percent: 5}
minKubeletUptime: 1s
cooldown: 1s
maxRestartsPerDay: 100
stableFor: 3s
verifyTimeout: 60s
`

func startNode(t *testing.T, l layout, policy string) *node {
	t.Helper()
	return startNodeWith(t, l, policy, nodeOptions{})
}

// nodeOptions vary startNode.
type nodeOptions struct {
	// API registers the kubelet as a Node (a CNI network config is provided so that the
	// runtime reports NetworkReady and the Node can become Ready).
	API *harness.APIServer
	// SingleDisk puts containerd's root on the kubelet's tmpfs: imagefs is nodefs.
	SingleDisk bool
}

func startNodeWith(t *testing.T, l layout, policy string, no nodeOptions) *node {
	t.Helper()
	harness.RequireRoot(t)
	fs := harness.TmpFS(t, 256<<20, 200000) // before the sandbox: its mount namespace copies it
	sd := harness.StartSystemd(t)
	// imagefs on its own disk, as in the incident (docker's root moved to /data by hand).
	co := harness.ContainerdOptions{}
	if no.SingleDisk {
		co.Root = filepath.Join(fs, "containerd")
	}
	c := harness.StartContainerd(t, co)
	opts := harness.KubeletOptions{Containerd: c, RootDir: filepath.Join(fs, "kubelet"), APIServer: no.API}
	if no.API != nil {
		// containerd's CRI counts a network config (plus its loopback) as NetworkReady; no pod
		// is ever started, so no plugin binary is needed.
		writeFile(t, filepath.Join(c.Dir, "cni", "conf", "10-evictguard.conflist"),
			`{"cniVersion": "1.0.0", "name": "evictguard-e2e", "plugins": [{"type": "bridge", "bridge": "eg0"}]}`)
	}
	if l == layoutConfigDir {
		opts.DropIns = map[string]string{"50-local.conf": "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 50\n"}
	}
	k := harness.PrepareKubelet(t, opts)
	base := fmt.Sprintf("--root-dir=%s --hostname-override=%s --cert-dir=%s", k.RootDir, k.NodeName, filepath.Join(k.Dir, "pki"))
	for _, a := range k.Args {
		if strings.HasPrefix(a, "--kubeconfig=") {
			base += " " + a
		}
	}
	var dropIn string
	switch l {
	case layoutKubeadm17:
		dropIn = fmt.Sprintf(`[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--config=%s"
Environment="KUBELET_SYSTEM_PODS_ARGS=%s"
Environment="KUBELET_CADVISOR_ARGS=--v=2"
ExecStart=
ExecStart=%s $KUBELET_KUBECONFIG_ARGS $KUBELET_SYSTEM_PODS_ARGS $KUBELET_CADVISOR_ARGS $KUBELET_EXTRA_ARGS
`, k.ConfigPath, base, k.Binary)
	default:
		flagsEnv := filepath.Join(k.Dir, "kubeadm-flags.env")
		defaultKubelet := filepath.Join(k.Dir, "default-kubelet")
		writeFile(t, flagsEnv, fmt.Sprintf("KUBELET_KUBEADM_ARGS=\"%s\"\n", base))
		writeFile(t, defaultKubelet, "KUBELET_EXTRA_ARGS=--v=2\n")
		cfgArgs := "--config=" + k.ConfigPath
		if l == layoutConfigDir {
			cfgArgs += " --config-dir=" + k.ConfigDir
		}
		dropIn = fmt.Sprintf(`# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_CONFIG_ARGS=%s"
EnvironmentFile=-%s
EnvironmentFile=-%s
ExecStart=
ExecStart=%s $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`, cfgArgs, flagsEnv, defaultKubelet, k.Binary)
	}
	u := harness.StartKubeletUnit(t, sd, k, map[string]string{"10-kubeadm.conf": dropIn})
	n := &node{KubeletUnit: u, cri: c.Address, fs: fs, state: harness.TempDir(t, "state"), policy: filepath.Join(harness.TempDir(t, "policy"), "policy.yaml")}
	writeFile(t, n.policy, policy)
	// The test policies require minKubeletUptime 1s: without this, an apply that follows
	// start-up quickly is (rightly) blocked by that gate and the test races it.
	time.Sleep(1500 * time.Millisecond)
	return n
}

// fillTo fills the tmpfs until availableFraction of it is left.
func (n *node) fillTo(t *testing.T, availableFraction float64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.fs, &st); err != nil {
		t.Fatal(err)
	}
	capacity, avail := int64(st.Blocks)*st.Frsize, int64(st.Bavail)*st.Frsize
	fill(t, filepath.Join(n.fs, "filler"), avail-int64(availableFraction*float64(capacity)))
}

func (n *node) waitLog(t *testing.T, from int64, needle string, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(context.Background(), timeout, nil, func() error {
		if !strings.Contains(n.LogText(from), needle) {
			return fmt.Errorf("no %q in the kubelet log yet", needle)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nlog tail:\n%s", err, tail(n.LogText(from), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (n *node) args(extra ...string) []string {
	return append([]string{"--host-root", n.HostRoot, "--state-dir", n.state, "--bus-address", n.SD.BusAddress,
		"--configz", n.ConfigzURL(), "--healthz", n.HealthzURL(), "--policy", n.policy, "--runtime", "containerd", "--cri-endpoint", n.cri}, extra...)
}

func (n *node) apply(t *testing.T, env []string, extra ...string) (string, string, int) {
	t.Helper()
	return runEvictguardEnv(t, env, append([]string{"apply", "--yes"}, n.args(extra...)...)...)
}

// unitFiles snapshots the kubelet unit's drop-ins and the kubelet's config dir.
func (n *node) unitFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{filepath.Join(n.SD.UnitDir, "kubelet.service.d"), n.ConfigDir} {
		if dir == "" {
			continue
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Join(dir, e.Name())] = string(b)
		}
	}
	return out
}

var fiveDefaults = map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
	"imagefs.available": "15%", "imagefs.inodesFree": "5%"}

var lowered = map[string]string{"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%",
	"imagefs.available": "15%", "imagefs.inodesFree": "5%"}

func (n *node) assertConfigz(t *testing.T, want map[string]string) {
	t.Helper()
	got, err := n.EvictionHard()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("/configz evictionHard = %v, want %v", got, want)
	}
}

// TestRemediateIncident reproduces the incident in README.md on three layouts — the seed's 1.7-era kubeadm
// drop-in, modern kubeadm (kubeadm-flags.env, /etc/default/kubelet, config.yaml) and a kubelet
// --config-dir — with the root dir at ~91.5 % of a single disk: the kubelet reports
// DiskPressure on its defaults; `evictguard apply` under a policy with a 5 % floor writes the
// complete map in the place the layout calls for, restarts kubelet.service over D-Bus and
// verifies; /configz then has all five keys (nodefs and imagefs lowered, no default dropped)
// and the kubelet no longer reports pressure.
func TestRemediateIncident(t *testing.T) {
	cases := []struct {
		name     string
		layout   layout
		method   string
		contains string
		file     func(n *node) string
	}{
		{"kubeadm 1.7 drop-in", layoutKubeadm17, "kubeadm-legacy-dropin",
			`Environment="KUBELET_EVICTION_POLICY_ARGS=--eviction-hard=memory.available<100Mi,nodefs.available<5%%,nodefs.inodesFree<5%%,imagefs.available<15%%,imagefs.inodesFree<5%%"`,
			func(n *node) string { return n.DropInPath("10-kubeadm.conf") }},
		{"modern kubeadm", layoutKubeadmModern, "systemd-dropin", "$EVICTGUARD_EVICTION_ARGS",
			func(n *node) string { return n.DropInPath("90-evictguard.conf") }},
		{"config-dir", layoutConfigDir, "config-dir", `nodefs.available: "5%"`,
			func(n *node) string { return filepath.Join(n.ConfigDir, "90-evictguard.conf") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			n := startNode(t, tc.layout, testPolicy)
			n.assertConfigz(t, fiveDefaults)
			before := n.unitFiles(t)
			n.fillTo(t, 0.085)
			n.waitLog(t, 0, "NodeHasDiskPressure", 60*time.Second)
			time.Sleep(time.Second)

			out, errOut, code := runEvictguard(t, append([]string{"plan"}, n.args()...)...)
			if code != 0 || !strings.Contains(out, "Write method: "+tc.method) || !strings.Contains(out, "+++ b") {
				t.Fatalf("plan: exit %d\n%s\n%s", code, out, errOut)
			}
			if !maps.Equal(before, n.unitFiles(t)) {
				t.Fatal("plan changed files")
			}
			out, errOut, code = n.apply(t, nil)
			if code != 0 {
				t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
			}
			t.Logf("apply output:\n%s", out)
			b, err := os.ReadFile(tc.file(n))
			if err != nil || !strings.Contains(string(b), tc.contains) {
				t.Errorf("%s (%v) lacks %q:\n%s", tc.file(n), err, tc.contains, b)
			}
			n.assertConfigz(t, lowered)
			// The restarted kubelet's eviction manager no longer sees pressure.
			from := n.LogSize()
			time.Sleep(25 * time.Second)
			if seg := n.LogText(from); strings.Contains(seg, "NodeHasDiskPressure") || strings.Contains(seg, "thresholds have been met") {
				t.Errorf("the kubelet still reports disk pressure after the change:\n%s", tail(seg, 3000))
			}
			// A second apply has nothing to do.
			out, _, code = n.apply(t, nil)
			if code != 0 || !strings.Contains(out, "Nothing to do") {
				t.Errorf("second apply: exit %d\n%s", code, out)
			}
			t.Logf("%s: %s", tc.name, time.Since(start).Round(time.Second))
		})
	}
}

// TestRemediateIncidentSingleDisk is the incident on a node with one disk: containerd's root
// on the kubelet's tmpfs, so the kubelet's imagefs is nodefs and at ~91.5 % used both
// nodefs.available<10% and imagefs.available<15% are breached. Under a policy that may lower
// nodefs and imagefs to 5 %, evictguard (through --host-root, asking containerd's CRI
// ImageFsInfo) sees imagefs on the same tmpfs, lowers both, the kubelet stops reporting
// DiskPressure, and /configz has all five keys.
func TestRemediateIncidentSingleDisk(t *testing.T) {
	start := time.Now()
	n := startNodeWith(t, layoutKubeadm17, testPolicy, nodeOptions{SingleDisk: true})
	n.fillTo(t, 0.085)
	n.waitLog(t, 0, "NodeHasDiskPressure", 60*time.Second)
	time.Sleep(time.Second)

	out, errOut, code := runEvictguard(t, "status", "--output", "json", "--host-root", n.HostRoot, "--runtime", "containerd", "--cri-endpoint", n.cri)
	if code != 1 {
		t.Fatalf("status: exit %d, want 1 (breached)\n%s\n%s", code, out, errOut)
	}
	var st struct {
		Dedicated   bool `json:"dedicatedImageFs"`
		Filesystems []struct {
			Role, Path    string
			CapacityBytes int64
		} `json:"filesystems"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	paths, capacity := map[string]string{}, map[string]int64{}
	for _, f := range st.Filesystems {
		paths[f.Role], capacity[f.Role] = f.Path, f.CapacityBytes
	}
	// (The kubelet bind-mounts its root dir onto itself, so compare paths, not mountpoints.)
	if st.Dedicated || !strings.HasPrefix(paths["nodefs"], n.fs+"/") || !strings.HasPrefix(paths["imagefs"], n.fs+"/") || capacity["imagefs"] != capacity["nodefs"] {
		t.Errorf("status through --host-root: dedicatedImageFs=%v, nodefs %s, imagefs %s (capacity %d vs %d); want both on the tmpfs %s",
			st.Dedicated, paths["nodefs"], paths["imagefs"], capacity["nodefs"], capacity["imagefs"], n.fs)
	}

	out, errOut, code = n.apply(t, nil)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("apply output:\n%s", out)
	n.assertConfigz(t, map[string]string{"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%",
		"imagefs.available": "5%", "imagefs.inodesFree": "5%"})
	from := n.LogSize()
	time.Sleep(25 * time.Second)
	if seg := n.LogText(from); strings.Contains(seg, "NodeHasDiskPressure") || strings.Contains(seg, "thresholds have been met") {
		t.Errorf("the kubelet still reports disk pressure after the change:\n%s", tail(seg, 3000))
	}
	t.Logf("single disk: %s", time.Since(start).Round(time.Second))
}

// TestRemediateRollback injects a threshold the kubelet refuses: the kubelet crash-loops after
// the restart, evictguard restores the drop-in, restarts it on the old values and reports.
func TestRemediateRollback(t *testing.T) {
	n := startNode(t, layoutKubeadm17, testPolicy)
	n.fillTo(t, 0.085)
	before := n.unitFiles(t)
	out, errOut, code := n.apply(t, []string{"EVICTGUARD_TEST_INJECT_THRESHOLD=nodefs.available<0"})
	if code != 1 || !strings.Contains(errOut, "rolled back") {
		t.Fatalf("apply: exit %d, want 1 and a rollback\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "result=rolled-back") {
		t.Errorf("no rolled-back report in the log:\n%s", errOut)
	}
	if after := n.unitFiles(t); !maps.Equal(before, after) {
		t.Errorf("unit files not restored:\n%v\n%v", before, after)
	}
	n.assertConfigz(t, fiveDefaults)
	if !strings.Contains(n.LogText(0), "nodefs.available") {
		t.Log("kubelet log does not mention the rejected value")
	}
}

// TestRemediateCrashSafety kills evictguard with SIGKILL after each step of apply; the next
// apply recovers from the journal (finishing or rolling back), and the unit files are always
// byte-identical to either the state before or the state after.
func TestRemediateCrashSafety(t *testing.T) {
	n := startNode(t, layoutKubeadm17, testPolicy)
	n.fillTo(t, 0.085)
	orig := n.unitFiles(t)
	time.Sleep(2 * time.Second) // the policy's minKubeletUptime
	var after map[string]string
	for _, step := range []string{"write", "reload", "restart", "verify"} {
		t.Run(step, func(t *testing.T) {
			// Back to the original state (and kubelet) if an earlier step finished the change.
			if !maps.Equal(n.unitFiles(t), orig) {
				for p, c := range orig {
					writeFile(t, p, c)
				}
				restartUnit(t, n)
			}
			out, errOut, code := n.apply(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=" + step})
			if code != -1 && code != 137 {
				t.Fatalf("apply with crash after %s: exit %d, want SIGKILL\n%s\n%s", step, code, out, errOut)
			}
			mid := n.unitFiles(t)
			if !maps.Equal(mid, orig) {
				if after == nil {
					after = mid
				}
				if !maps.Equal(mid, after) {
					t.Fatalf("unit files after the crash are neither before nor after:\n%v", mid)
				}
			}
			out, errOut, code = n.apply(t, nil)
			if code != 0 || !strings.Contains(out, "Recovered 1 interrupted operation") {
				t.Fatalf("recovery: exit %d\n%s\n%s", code, out, errOut)
			}
			final := n.unitFiles(t)
			if !maps.Equal(final, orig) && (after == nil || !maps.Equal(final, after)) {
				t.Errorf("unit files after recovery are neither before nor after:\n%v", final)
			}
			hard, err := n.EvictionHard()
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(hard, lowered) {
				t.Errorf("after recovery (and a new apply if rolled back) /configz = %v, want %v", hard, lowered)
			}
			t.Logf("after crash at %s: %s", step, firstLine(out))
		})
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

func restartUnit(t *testing.T, n *node) {
	t.Helper()
	ctx := context.Background()
	if err := n.Conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	if _, err := n.Conn.RestartUnitContext(ctx, "kubelet.service", "replace", done); err != nil {
		t.Fatal(err)
	}
	<-done
	err := harness.WaitFor(ctx, 60*time.Second, nil, func() error {
		h, err := n.EvictionHard()
		if err != nil {
			return err
		}
		if !maps.Equal(h, fiveDefaults) {
			return fmt.Errorf("configz %v", h)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
}
