package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/e2e/harness"
)

func TestSmokeTmpFS(t *testing.T) {
	dir := harness.TmpFS(t, 8<<20, 100)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * st.Frsize; got != 8<<20 {
		t.Errorf("capacity = %d, want %d", got, 8<<20)
	}
	if st.Files != 100 {
		t.Errorf("inodes = %d, want 100", st.Files)
	}
	// Real inode exhaustion: creating more files than nr_inodes fails with ENOSPC.
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		err = os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o644)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("filling inodes: err = %v, want ENOSPC", err)
	}
}

func TestSmokeContainerd(t *testing.T) {
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	tarball := harness.BusyboxRootfsTar(t)
	// ctr import wants an image archive; a rootfs tarball goes in as a snapshot-less import
	// through the docker-compatible path in the Docker smoke test. Here check the CRI plugin.
	_ = tarball
	out := c.Ctr(t, "plugins", "ls")
	if !strings.Contains(out, "io.containerd.grpc.v1") || !strings.Contains(out, "cri") {
		t.Fatalf("CRI plugin not listed:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "io.containerd.grpc.v1") && strings.Contains(line, " cri ") && !strings.Contains(line, "ok") {
			t.Fatalf("CRI plugin not ok: %s", line)
		}
	}
}

func TestSmokeDocker(t *testing.T) {
	d := harness.StartDocker(t, harness.DockerOptions{})
	d.ImportBusybox(t, "evictguard.local/busybox:1")
	out := d.CLI(t, "run", "--rm", "--network", "none", "evictguard.local/busybox:1", "/bin/sh", "-c", "echo hello-from-busybox")
	if !strings.Contains(out, "hello-from-busybox") {
		t.Fatalf("docker run output = %q", out)
	}
	resp, err := d.HTTP.Get("http://docker/info")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct{ DockerRootDir, Driver string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	if info.DockerRootDir != d.DataRoot || info.Driver != "vfs" {
		t.Errorf("info = %+v, want root %s and driver vfs", info, d.DataRoot)
	}
}

func TestSmokeAPIServer(t *testing.T) {
	a := harness.StartAPIServer(t)
	ctx := context.Background()
	ns, err := a.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get namespace default: %v", err)
	}
	if ns.Name != "default" {
		t.Fatalf("namespace = %q", ns.Name)
	}
}

func TestSmokePrometheusAlertmanager(t *testing.T) {
	am := harness.StartAlertmanager(t, "")
	// Post an alert to the v2 API and read it back.
	body := `[{"labels":{"alertname":"EvictguardSmoke","node":"n1"},"annotations":{"summary":"smoke"}}]`
	resp, err := http.Post(am.URL+"/api/v2/alerts", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post alert: %s", resp.Status)
	}
	err = harness.WaitFor(context.Background(), 10*time.Second, am.Proc, func() error {
		b, err := httpGet(am.URL + "/api/v2/alerts")
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte("EvictguardSmoke")) {
			return fmt.Errorf("alert not listed yet: %s", b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	p := harness.StartPrometheus(t, harness.PrometheusConfig("1s", []string{am.HostPort()}, nil, []string{am.HostPort()}), nil)
	err = harness.WaitFor(context.Background(), 30*time.Second, p.Proc, func() error {
		b, err := httpGet(p.URL + "/api/v1/query?query=up")
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(`"value":[`)) || !bytes.Contains(b, []byte(`"1"]`)) {
			return fmt.Errorf("up not 1 yet: %s", b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("prometheus did not scrape alertmanager: %v", err)
	}
}

// TestSmokeKubeletDiskPressure reproduces the incident in README.md: a kubelet whose root
// dir sits on a nearly full filesystem reports DiskPressure, and the Node in the API server
// gets the DiskPressure condition.
func TestSmokeKubeletDiskPressure(t *testing.T) {
	api := harness.StartAPIServer(t)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	nodefs := harness.TmpFS(t, 64<<20, 0)
	// Fill to ~92 % used, like the incident's root filesystem: over nodefs.available<10%.
	fill(t, filepath.Join(nodefs, "filler"), 59<<20)
	k := harness.StartKubelet(t, harness.KubeletOptions{
		Containerd: c, APIServer: api, NodeName: "node-3", RootDir: filepath.Join(nodefs, "kubelet"),
	})
	hard, err := k.EvictionHard()
	if err != nil {
		t.Fatal(err)
	}
	if hard["nodefs.available"] != "10%" || hard["memory.available"] != "100Mi" || len(hard) != 5 {
		t.Errorf("configz evictionHard = %v, want the five 1.30+ Linux defaults", hard)
	}
	if err := waitNodeCondition(api, k, "node-3", corev1.NodeDiskPressure); err != nil {
		t.Fatalf("node never got DiskPressure: %v", err)
	}
	if log := k.Proc.Log(); !strings.Contains(log, "NodeHasDiskPressure") {
		t.Errorf("kubelet log has no NodeHasDiskPressure")
	}
}

func fill(t testing.TB, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 1<<20)
	for n > 0 {
		m := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:m]); err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
		n -= m
	}
}

func httpGet(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// waitNodeCondition waits (2 minutes, while the kubelet runs) until the Node has cond True.
func waitNodeCondition(api *harness.APIServer, k *harness.Kubelet, node string, cond corev1.NodeConditionType) error {
	ctx := context.Background()
	return harness.WaitFor(ctx, 120*time.Second, k.Proc, func() error {
		n, err := api.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == cond {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("%s=%s (%s)", cond, c.Status, c.Message)
			}
		}
		return fmt.Errorf("no %s condition yet", cond)
	})
}
