package harness

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Containerd is a running containerd with its CRI plugin.
type Containerd struct {
	Dir, Root, State, ConfigPath string
	Address                      string // the gRPC unix socket path
	Proc                         *Process
}

// Endpoint is the CRI endpoint for the kubelet.
func (c *Containerd) Endpoint() string { return "unix://" + c.Address }

// ContainerdOptions tunes StartContainerd.
type ContainerdOptions struct {
	// Root overrides the data root (default Dir/root), e.g. to put it on a tmpfs.
	Root string
	// Snapshotter for the CRI plugin (default "native", which works on any filesystem).
	Snapshotter string
}

// ContainerdConfig renders a containerd 1.6 (config version 2) configuration.
//
// restrict_oom_score_adj: the CRI plugin asks runc for oom_score_adj -998 for every pod
// sandbox (and the kubelet's QoS values for containers). Lowering a process's
// oom_score_adj needs CAP_SYS_RESOURCE, which machines such as the project's VM drop from
// the capability bounding set even for root; runc's nsexec then dies writing
// /proc/self/oom_score_adj ("Permission denied"), which runc reports as "can't get final
// child's PID from pipe: EOF". With the restriction containerd clamps the value to its own
// oom_score_adj, so sandboxes start on such machines and nothing changes elsewhere for the
// tests. runc keeps its state under the harness state dir, not the host's /run/containerd.
// Snapshot usage (CRI container stats) is collected every second, not every 10.
func ContainerdConfig(root, state, address, snapshotter, cniDir string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[ttrpc]
  address = "%s.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "evictguard.local/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = true
  stats_collect_period = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "%s/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%s/bin"
    conf_dir = "%s/conf"
`, root, state, address, address, snapshotter, state, cniDir, cniDir)
}

// prepareContainerd lays out a containerd's directories and writes its configuration (with
// header prepended) under dir; StartContainerd and StartContainerdUnit share it.
func prepareContainerd(t testing.TB, dir string, opts ContainerdOptions, header string) *Containerd {
	t.Helper()
	c := &Containerd{Dir: dir, Root: opts.Root, State: filepath.Join(dir, "state"),
		Address: filepath.Join(dir, "containerd.sock"), ConfigPath: filepath.Join(dir, "config.toml")}
	if c.Root == "" {
		c.Root = filepath.Join(dir, "root")
	}
	snap := opts.Snapshotter
	if snap == "" {
		snap = "native"
	}
	for _, d := range []string{c.Root, c.State, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := header + ContainerdConfig(c.Root, c.State, c.Address, snap, filepath.Join(dir, "cni"))
	if err := os.WriteFile(c.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// StartContainerd starts containerd with CRI and waits until its socket answers.
func StartContainerd(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	RequireRoot(t)
	bin := Binary(t, "containerd", "containerd")
	Binary(t, "runc", "runc")
	c := prepareContainerd(t, TempDir(t, "containerd"), opts, "")
	dir := c.Dir
	c.Proc = Start(t, dir, "containerd", nil, bin, "--config", c.ConfigPath)
	err := WaitFor(context.Background(), 30*time.Second, c.Proc, func() error {
		return ctrRun(c.Address, "version")
	})
	if err != nil {
		t.Fatalf("containerd did not become ready: %v", err)
	}
	c.removePodsAtCleanup(t)
	return c
}

// removePodsAtCleanup registers, after containerd's own stop, a cleanup that runs before it:
// every CRI pod sandbox is stopped and removed, and with it its containers and shims. A
// stopped containerd leaves shims and container processes (and their cgroups) behind.
func (c *Containerd) removePodsAtCleanup(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.RemoveAllPods(ctx); err != nil {
			t.Errorf("containerd teardown: %v", err)
		}
	})
}

// RemoveAllPods stops and removes every pod sandbox through the CRI.
func (c *Containerd) RemoveAllPods(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial CRI: %w", err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if status.Code(err) == codes.Unavailable {
		return nil // not running (a test stopped it); the leak check reports what it left
	}
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	for _, sb := range resp.GetItems() {
		id := sb.GetId()
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return fmt.Errorf("stop pod sandbox %s: %w", id, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			return fmt.Errorf("remove pod sandbox %s: %w", id, err)
		}
	}
	return nil
}

// Ctr runs the ctr client against this containerd (namespace k8s.io, as the CRI uses).
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.Address, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ctrRun(address string, args ...string) error {
	out, err := exec.Command("ctr", append([]string{"--address", address}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Docker is a running dockerd (vfs storage, no networking).
type Docker struct {
	Dir, DataRoot, ExecRoot, ConfigPath string
	Socket                              string
	Proc                                *Process
	HTTP                                *http.Client // talks to the Engine API over the socket
}

// DockerOptions tunes StartDocker.
type DockerOptions struct {
	// DataRoot overrides --data-root (default Dir/data); ignored when DaemonJSON sets one.
	DataRoot string
	// DaemonJSON, when set, is written as the daemon's --config-file.
	DaemonJSON string
}

// StartDocker starts dockerd the way the harness does it (docs/development.md#the-test-harness) and waits for /_ping.
func StartDocker(t testing.TB, opts DockerOptions) *Docker {
	t.Helper()
	RequireRoot(t)
	bin := Binary(t, "dockerd", "docker.io")
	Binary(t, "docker", "docker.io")
	dir := TempDir(t, "docker")
	d := &Docker{Dir: dir, DataRoot: opts.DataRoot, ExecRoot: filepath.Join(dir, "exec"),
		Socket: filepath.Join(dir, "docker.sock"), ConfigPath: filepath.Join(dir, "daemon.json")}
	if d.DataRoot == "" {
		d.DataRoot = filepath.Join(dir, "data")
	}
	cfg := opts.DaemonJSON
	if cfg == "" {
		cfg = "{}"
	}
	if err := os.WriteFile(d.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config-file", d.ConfigPath, "--exec-root", d.ExecRoot, "-H", "unix://" + d.Socket,
		"--pidfile", filepath.Join(dir, "docker.pid"), "--bridge=none", "--iptables=false", "--ip6tables=false",
		"--storage-driver=vfs"}
	if !strings.Contains(cfg, `"data-root"`) && !strings.Contains(cfg, `"graph"`) {
		args = append(args, "--data-root", d.DataRoot)
	}
	d.Proc = Start(t, dir, "dockerd", nil, bin, args...)
	d.HTTP = dockerHTTP(d.Socket)
	if err := d.waitPing(d.Proc); err != nil {
		t.Fatalf("dockerd did not become ready: %v", err)
	}
	return d
}

// dockerHTTP is a client of the Engine API on a unix socket (any host name).
func dockerHTTP(socket string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}
}

// waitPing waits up to a minute for /_ping to answer 200 (p, when not nil, must keep running).
func (d *Docker) waitPing(p *Process) error {
	return WaitFor(context.Background(), 60*time.Second, p, func() error {
		resp, err := d.HTTP.Get("http://docker/_ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/_ping: %s", resp.Status)
		}
		return nil
	})
}

// CLI runs the docker client against this daemon.
func (d *Docker) CLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.TryCLI(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TryCLI runs the docker client and returns its output and error.
func (d *Docker) TryCLI(args ...string) (string, error) {
	out, err := exec.Command("docker", append([]string{"-H", "unix://" + d.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

// ImportBusybox imports a tiny image made from Debian's busybox-static as ref.
func (d *Docker) ImportBusybox(t testing.TB, ref string) {
	t.Helper()
	tarball := BusyboxRootfsTar(t)
	d.CLI(t, "import", tarball, ref)
}

// BusyboxRootfsTar writes a root filesystem tarball holding /bin/busybox and links to it for
// the common applets, and returns its path.
func BusyboxRootfsTar(t testing.TB) string {
	t.Helper()
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		Unavailable(t, "%s missing (install Debian package busybox-static)", bb)
	}
	dir := TempDir(t, "rootfs")
	p := filepath.Join(dir, "busybox.tar")
	if err := writeBusyboxTar(p, bb); err != nil {
		t.Fatalf("build busybox rootfs: %v", err)
	}
	return p
}

func writeBusyboxTar(path, busybox string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, d := range []string{"bin/", "tmp/", "etc/", "proc/", "sys/", "dev/", "data/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	src, err := os.Open(busybox)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, src); err != nil {
		return err
	}
	for _, applet := range []string{"sh", "ls", "cat", "echo", "sleep", "dd", "mkdir", "rm", "du", "df", "true", "false", "touch", "head", "yes"} {
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Linkname: "busybox", Typeflag: tar.TypeSymlink, Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}
