package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// KubeletOptions says how to configure a kubelet. The harness always adds what it needs to
// run here (loopback address, free ports, anonymous configz, cgroupfs, cgroup v1 allowed,
// swap allowed, containerd as runtime); the test supplies the eviction settings under test.
type KubeletOptions struct {
	Containerd *Containerd
	// APIServer, when set, registers the kubelet as a Node with that server.
	APIServer *APIServer
	NodeName  string
	// RootDir is the --root-dir (e.g. a tmpfs); default Dir/root.
	RootDir string
	// NoConfigFile runs the kubelet with flags only (no --config).
	NoConfigFile bool
	// ConfigExtra is YAML appended to the generated KubeletConfiguration (e.g. evictionHard).
	ConfigExtra string
	// DropIns are files for a --config-dir (name → content); nil means no --config-dir.
	DropIns map[string]string
	// Flags are extra kubelet flags, appended last.
	Flags []string
	// StaticPods are manifests (name → YAML) for the staticPodPath.
	StaticPods map[string]string
	// Version runs the cached kubelet of that version (K8sOldVersion) instead of the pinned
	// one; the harness leaves out the settings that kubelet does not know.
	Version string
	// Address, when set, is where the kubelet serves (instead of 127.0.0.1) and the node IP
	// it registers (--address, --node-ip). The API server proxies only to global unicast
	// addresses, never to loopback, so a proxy test needs e.g. an extra address on lo.
	Address string
}

// Kubelet is a running kubelet.
type Kubelet struct {
	Dir, RootDir, ConfigPath, ConfigDir string
	Port, HealthzPort                   int
	Args                                []string // full argv including the binary
	Binary                              string
	NodeName                            string
	Proc                                *Process

	// Address is where the kubelet's authenticated port listens ("" = 127.0.0.1).
	Address string
}

// ConfigzURL is the kubelet's /configz endpoint.
func (k *Kubelet) ConfigzURL() string {
	addr := k.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	return fmt.Sprintf("https://%s/configz", net.JoinHostPort(addr, fmt.Sprint(k.Port)))
}

// HealthzURL is the kubelet's /healthz endpoint.
func (k *Kubelet) HealthzURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/healthz", k.HealthzPort)
}

// KubeletConfigBase renders the part of a KubeletConfiguration this machine needs.
func KubeletConfigBase(port, healthzPort int, endpoint, staticPodPath, podLogsDir string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: %s
staticPodPath: %s
podLogsDir: %s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, port, healthzPort, endpoint, staticPodPath, podLogsDir)
}

// KubeletBaseFlags is the flag equivalent of KubeletConfigBase for a flags-only kubelet.
func KubeletBaseFlags(port, healthzPort int, endpoint, staticPodPath string) []string {
	return []string{
		"--address=127.0.0.1", fmt.Sprintf("--port=%d", port), "--read-only-port=0",
		"--healthz-bind-address=127.0.0.1", fmt.Sprintf("--healthz-port=%d", healthzPort),
		"--anonymous-auth=true", "--authentication-token-webhook=false", "--authorization-mode=AlwaysAllow",
		"--fail-cgroupv1=false", "--fail-swap-on=false", "--cgroup-driver=cgroupfs",
		"--container-runtime-endpoint=" + endpoint, "--pod-manifest-path=" + staticPodPath,
		"--image-gc-high-threshold=100", "--image-gc-low-threshold=99",
	}
}

// PrepareKubelet writes the kubelet's files and computes its argv without starting it, so a
// test can run it another way (e.g. as kubelet.service under the sandboxed systemd).
func PrepareKubelet(t testing.TB, opts KubeletOptions) *Kubelet {
	t.Helper()
	RequireRoot(t)
	bin := K8sBinary(t, "kubelet")
	if opts.Version != "" {
		bin = K8sBinaryVersion(t, "kubelet", opts.Version)
	}
	if opts.Containerd == nil {
		t.Fatal("KubeletOptions.Containerd is required")
	}
	ClaimHostPaths(t, kubeletHostPaths...)
	dir := TempDir(t, "kubelet")
	k := &Kubelet{Dir: dir, RootDir: opts.RootDir, Port: FreePort(t), HealthzPort: FreePort(t), Binary: bin, NodeName: opts.NodeName, Address: opts.Address}
	if k.RootDir == "" {
		k.RootDir = filepath.Join(dir, "root")
	}
	if k.NodeName == "" {
		k.NodeName = "evictguard-node"
	}
	manifests := filepath.Join(dir, "manifests")
	podLogs := filepath.Join(dir, "pod-logs")
	for _, d := range []string{k.RootDir, manifests, podLogs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, m := range opts.StaticPods {
		mustWrite(t, filepath.Join(manifests, name), m, 0o644)
	}
	args := []string{bin, "--root-dir=" + k.RootDir, "--hostname-override=" + k.NodeName,
		"--cert-dir=" + filepath.Join(dir, "pki"), "--v=2"}
	if opts.NoConfigFile {
		flags := KubeletBaseFlags(k.Port, k.HealthzPort, opts.Containerd.Endpoint(), manifests)
		if opts.Version != "" && opts.Version < "v1.31" {
			// --fail-cgroupv1 came with 1.31; an older kubelet refuses unknown flags.
			flags = slices.DeleteFunc(flags, func(f string) bool { return strings.HasPrefix(f, "--fail-cgroupv1") })
		}
		args = append(args, flags...)
	} else {
		k.ConfigPath = filepath.Join(dir, "config.yaml")
		cfg := KubeletConfigBase(k.Port, k.HealthzPort, opts.Containerd.Endpoint(), manifests, podLogs) + opts.ConfigExtra
		mustWrite(t, k.ConfigPath, cfg, 0o644)
		args = append(args, "--config="+k.ConfigPath)
	}
	if opts.DropIns != nil {
		k.ConfigDir = filepath.Join(dir, "kubelet.conf.d")
		if err := os.MkdirAll(k.ConfigDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, c := range opts.DropIns {
			mustWrite(t, filepath.Join(k.ConfigDir, name), c, 0o644)
		}
		args = append(args, "--config-dir="+k.ConfigDir)
	}
	if opts.APIServer != nil {
		kc := filepath.Join(dir, "kubelet.kubeconfig")
		mustWrite(t, kc, KubeconfigFor(opts.APIServer.URL, opts.APIServer.AdminToken), 0o600)
		args = append(args, "--kubeconfig="+kc)
	}
	if opts.Address != "" {
		args = append(args, "--address="+opts.Address, "--node-ip="+opts.Address)
	}
	args = append(args, opts.Flags...)
	k.Args = args
	return k
}

// StartKubelet prepares and starts a kubelet and waits until /healthz answers and /configz
// serves its configuration.
func StartKubelet(t testing.TB, opts KubeletOptions) *Kubelet {
	t.Helper()
	k := PrepareKubelet(t, opts)
	k.Proc = Start(t, k.Dir, "kubelet", nil, k.Args[0], k.Args[1:]...)
	// The kubelet bind-mounts its root dir and pod volumes; unmount them after it stops
	// (cleanups run last-in first-out, so this runs after the process is stopped).
	t.Cleanup(func() {
		if err := UnmountBelow(k.RootDir); err != nil {
			t.Errorf("unmount kubelet root dir: %v", err)
		}
	})
	if err := k.WaitReady(context.Background(), 90*time.Second); err != nil {
		t.Fatalf("kubelet did not become ready: %v", err)
	}
	return k
}

// WaitReady waits for /healthz and /configz.
func (k *Kubelet) WaitReady(ctx context.Context, timeout time.Duration) error {
	return WaitFor(ctx, timeout, k.Proc, func() error {
		resp, err := http.Get(k.HealthzURL())
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		_, err = k.Configz()
		return err
	})
}

// Configz returns the kubelet's /configz "kubeletconfig" object.
func (k *Kubelet) Configz() (map[string]any, error) {
	body, err := k.ConfigzRaw()
	if err != nil {
		return nil, err
	}
	var doc struct {
		KubeletConfig map[string]any `json:"kubeletconfig"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode /configz: %w", err)
	}
	if doc.KubeletConfig == nil {
		return nil, fmt.Errorf("/configz has no kubeletconfig: %s", body)
	}
	return doc.KubeletConfig, nil
}

// ConfigzRaw returns the body of /configz.
func (k *Kubelet) ConfigzRaw() ([]byte, error) { return k.Get("/configz") }

// Get returns the body of a GET of path ("/stats/summary") on the kubelet's secure port
// (anonymous: the harness kubelet authorizes AlwaysAllow unless told otherwise).
func (k *Kubelet) Get(path string) ([]byte, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback kubelet with a self-signed cert
	resp, err := hc.Get(strings.TrimSuffix(k.ConfigzURL(), "/configz") + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// EvictionHard returns /configz's evictionHard map.
func (k *Kubelet) EvictionHard() (map[string]string, error) {
	cfg, err := k.Configz()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if m, ok := cfg["evictionHard"].(map[string]any); ok {
		for key, v := range m {
			out[key] = fmt.Sprint(v)
		}
	}
	return out, nil
}

// kubeletHostPaths are paths the kubelet writes whatever its --root-dir says: the device
// plugin socket directory (pluginapi.DevicePluginPath) and the container log directories.
var kubeletHostPaths = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers"}

func runningKubelets() int {
	return len(Processes(func(pid int, argv []string) bool {
		return filepath.Base(argv[0]) == "kubelet" && !isZombieOrGone(pid)
	}))
}
