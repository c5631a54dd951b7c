package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The cluster around one node, for the tests that run evictguard as DaemonSet pods: what a
// kubeadm control plane and a node's networking provide, from the real programs.
//
//   - the node's address: one /32 added to lo, so the API server, the kubelet and the pods'
//     Service traffic use a node address as they would on a real node (a loopback address
//     is refused by the API server's endpoint reconciler and never proxied to);
//   - kube-controller-manager with the controllers a DaemonSet, its Service and its pods'
//     ServiceAccount tokens need (daemonset, endpointslice, garbagecollector, nodelifecycle,
//     root-ca-cert-publisher, serviceaccount);
//   - kube-scheduler, which binds DaemonSet pods to their node;
//   - kube-proxy in iptables mode, which maps Service default/kubernetes (10.96.0.1:443) to
//     the API server, so pods use the in-cluster config unchanged;
//   - a CNI configuration for the node's containerd: Debian's containernetworking-plugins
//     bridge, host-local and loopback, so pods get their own network namespace and IP.
const (
	// ClusterNodeIP is the node's address; ClusterPodCIDR its pods' range.
	ClusterNodeIP  = "172.30.77.1"
	ClusterPodCIDR = "10.244.77.0/24"
	clusterBridge  = "egcni0"
	cniPluginDir   = "/usr/lib/cni"
)

// clusterNodeMu serializes the tests that build a cluster node (NodeAddress).
var clusterNodeMu sync.Mutex

// NodeAddress adds ClusterNodeIP to lo and removes it at cleanup (after the components that
// use it stopped: cleanups run last-in first-out). Tests that call it run one at a time.
func NodeAddress(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	// One cluster node at a time: the address, the pod bridge and kube-proxy's iptables
	// chains are the machine's. The lock is released by the first cleanup registered, which
	// runs last, after the test's cluster is gone.
	waitStart := time.Now()
	clusterNodeMu.Lock()
	t.Cleanup(clusterNodeMu.Unlock)
	if waited := time.Since(waitStart); waited > time.Second {
		t.Logf("waited %s for the cluster node of another test", waited.Round(time.Second))
	}
	_ = exec.Command("ip", "addr", "del", ClusterNodeIP+"/32", "dev", "lo").Run() // left by a killed run
	if out, err := exec.Command("ip", "addr", "add", ClusterNodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s/32 dev lo: %v: %s", ClusterNodeIP, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "addr", "del", ClusterNodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Errorf("ip addr del %s/32 dev lo: %v: %s", ClusterNodeIP, err, out)
		}
	})
	return ClusterNodeIP
}

// ClusterCNI writes the pod network's configuration into containerd c's CNI directories:
// the plugins of containernetworking-plugins linked into its bin dir, and a bridge network
// over ClusterPodCIDR whose host-local leases live under c's directory. At cleanup (after
// the pods are gone) it deletes the bridge.
func ClusterCNI(t testing.TB, c *Containerd) {
	t.Helper()
	bin, conf := filepath.Join(c.Dir, "cni", "bin"), filepath.Join(c.Dir, "cni", "conf")
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		src := filepath.Join(cniPluginDir, p)
		if _, err := os.Stat(src); err != nil {
			t.Skipf("CNI plugin %s missing (Debian package containernetworking-plugins; hack/setup.sh installs it): %v", p, err)
		}
		if err := os.Symlink(src, filepath.Join(bin, p)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	gw := strings.TrimSuffix(ClusterPodCIDR, "0/24") + "1"
	mustWrite(t, filepath.Join(conf, "10-evictguard-e2e.conflist"), fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "evictguard-e2e",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, clusterBridge, filepath.Join(c.Dir, "cni", "ipam"), ClusterPodCIDR, gw), 0o644)
	_ = exec.Command("ip", "link", "del", clusterBridge).Run()
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", clusterBridge).Run() })
}

// StartControllerManager runs kube-controller-manager against a (as its admin) with the
// controllers a DaemonSet needs, and waits for its /healthz.
func StartControllerManager(t testing.TB, a *APIServer) *Process {
	t.Helper()
	bin := K8sBinary(t, "kube-controller-manager")
	dir := TempDir(t, "kube-controller-manager")
	port := FreePort(t)
	p := Start(t, dir, "kube-controller-manager", nil, bin,
		"--kubeconfig", a.Kubeconfig,
		// nodelifecycle: the kubelet registers its Node tainted not-ready:NoSchedule, and this
		// controller lifts the taint once the Node is Ready.
		"--controllers", "daemonset,endpointslice,garbagecollector,nodelifecycle,root-ca-cert-publisher,serviceaccount",
		// Published as ConfigMap kube-root-ca.crt in every namespace: the pods' in-cluster
		// config trusts the API server's self-signed certificate through it.
		"--root-ca-file", filepath.Join(a.Dir, "certs", "apiserver.crt"),
		"--leader-elect=false", "--use-service-account-credentials=false",
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(port),
		"--authentication-kubeconfig", a.Kubeconfig, "--authorization-kubeconfig", a.Kubeconfig,
		"--v=1")
	waitHTTP200(t, p, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), 90*time.Second)
	return p
}

// StartScheduler runs kube-scheduler against a and waits for its /healthz.
func StartScheduler(t testing.TB, a *APIServer) *Process {
	t.Helper()
	bin := K8sBinary(t, "kube-scheduler")
	dir := TempDir(t, "kube-scheduler")
	port := FreePort(t)
	p := Start(t, dir, "kube-scheduler", nil, bin,
		"--kubeconfig", a.Kubeconfig, "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(port),
		"--authentication-kubeconfig", a.Kubeconfig, "--authorization-kubeconfig", a.Kubeconfig,
		"--v=1")
	waitHTTP200(t, p, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), 90*time.Second)
	return p
}

// StartKubeProxy runs kube-proxy for node in iptables mode and waits until it has synced
// its rules once. At cleanup, after it stops, `kube-proxy --cleanup` removes its rules.
func StartKubeProxy(t testing.TB, a *APIServer, node string) *Process {
	t.Helper()
	bin := K8sBinary(t, "kube-proxy")
	Binary(t, "iptables", "iptables")
	dir := TempDir(t, "kube-proxy")
	healthz := FreePort(t)
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "--cleanup").CombinedOutput(); err != nil {
			t.Logf("kube-proxy --cleanup: %v: %s", err, out)
		}
	})
	p := Start(t, dir, "kube-proxy", nil, bin,
		"--kubeconfig", a.Kubeconfig, "--hostname-override", node,
		"--proxy-mode", "iptables", "--cluster-cidr", ClusterPodCIDR,
		"--healthz-bind-address", fmt.Sprintf("127.0.0.1:%d", healthz),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		// Leave the machine's sysctls alone: conntrack table size and timeouts, and
		// route_localnet (NodePorts on 127.0.0.1, which no test uses).
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
		"--iptables-localhost-nodeports=false",
		"--v=1")
	waitHTTP200(t, p, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz), 90*time.Second)
	return p
}
