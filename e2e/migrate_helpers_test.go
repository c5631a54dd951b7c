package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/treecopy"
)

// dockerMigration is a dockerd unit under the sandboxed systemd whose data root sits on one
// tmpfs, with a second tmpfs to move it to.
type dockerMigration struct {
	sd         *harness.Systemd
	docker     *harness.Docker
	a, b       string // the two tmpfs mounts
	stateDir   string
	daemonJSON string // original content
}

func (m *dockerMigration) args(extra ...string) []string {
	return append([]string{"migrate", "--runtime", "docker", "--bus-address", m.sd.BusAddress,
		"--docker-socket", m.docker.Socket, "--docker-config", m.docker.ConfigPath,
		"--runtime-units", "docker.service", "--state-dir", m.stateDir, "--yes"}, extra...)
}

// startDockerMigration mounts the filesystems (before the sandbox, so its units see them),
// starts docker.service with a legacy "graph" daemon.json, and fills it: an imported image, a
// stopped container with a change in its writable layer and logs, and a named volume.
func startDockerMigration(t *testing.T, sizeA, sizeB int64) *dockerMigration {
	t.Helper()
	harness.RequireRoot(t)
	m := &dockerMigration{a: harness.TmpFS(t, sizeA, 20000), b: harness.TmpFS(t, sizeB, 20000)}
	m.stateDir = harness.TempDir(t, "evictguard-state")
	m.sd = harness.StartSystemd(t)
	m.daemonJSON = `{
  "log-level": "warn",
  "graph": "` + filepath.Join(m.a, "docker") + `",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"},
  "debug": false
}
`
	m.docker = harness.StartDockerUnit(t, m.sd, harness.DockerUnitOptions{DaemonJSON: m.daemonJSON})
	d := m.docker
	d.ImportBusybox(t, "evictguard.local/busybox:1")
	d.CLI(t, "volume", "create", "vol1")
	d.CLI(t, "run", "--rm", "--network", "none", "-v", "vol1:/vol", "evictguard.local/busybox:1", "sh", "-c", "echo volume-data > /vol/data")
	out := d.CLI(t, "run", "--name", "c1", "--network", "none", "evictguard.local/busybox:1", "sh", "-c",
		"if [ -f /marker ]; then cat /marker; else echo kept-in-layer > /marker; echo created-before-migration; fi")
	if !strings.Contains(out, "created-before-migration") {
		t.Fatalf("first run of c1: %q", out)
	}
	return m
}

// dataDigest is a digest of the image layers and volumes under a docker root: what must not
// change. dockerd rewrites its own bookkeeping (bolt databases, container state) on every
// start, so those are left out, and so are the backingFsBlockDev device nodes (of the
// filesystem they are on) that dockerd recreates at every start.
func dataDigest(t *testing.T, root string) string {
	t.Helper()
	d, _ := dataDigestLines(t, root)
	return d
}

// dataDigestLines also returns what was digested, to show a difference.
func dataDigestLines(t *testing.T, root string, ignore ...string) (string, string) {
	t.Helper()
	var lines strings.Builder
	d, err := treecopy.Digest(context.Background(), root, treecopy.DigestOptions{Mtime: true, Lines: &lines, Skip: func(rel string) bool {
		top, _, _ := strings.Cut(rel, "/")
		return (top != "vfs" && top != "volumes" && top != "image") || strings.HasSuffix(rel, ".db") || strings.HasSuffix(rel, ".json") ||
			strings.HasSuffix(rel, "/backingFsBlockDev") || slices.Contains(ignore, rel)
	}})
	if err != nil {
		t.Fatal(err)
	}
	return d, lines.String()
}

// assertSameData fails with the differing lines when root's data digest is not want's.
func assertSameData(t *testing.T, root, wantDigest, wantLines string, ignore ...string) {
	t.Helper()
	got, lines := dataDigestLines(t, root, ignore...)
	if got == wantDigest {
		return
	}
	a, b := strings.Split(wantLines, "\n"), strings.Split(lines, "\n")
	in := map[string]bool{}
	for _, l := range b {
		in[l] = true
	}
	var diff []string
	for _, l := range a {
		if !in[l] {
			diff = append(diff, "- "+l)
		}
	}
	in = map[string]bool{}
	for _, l := range a {
		in[l] = true
	}
	for _, l := range b {
		if !in[l] {
			diff = append(diff, "+ "+l)
		}
	}
	t.Errorf("data under %s differs from the original:\n%s", root, strings.Join(diff, "\n"))
}

func (m *dockerMigration) dockerInfoRoot(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(m.docker.CLI(t, "info", "--format", "{{.DockerRootDir}}"))
}

// checkIntact asserts that dockerd runs on root with its image, container (and its change),
// logs and volume data.
func (m *dockerMigration) checkIntact(t *testing.T, root string) {
	t.Helper()
	d := m.docker
	if got := m.dockerInfoRoot(t); got != root {
		t.Fatalf("docker info DockerRootDir = %s, want %s", got, root)
	}
	if out := d.CLI(t, "images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(out, "evictguard.local/busybox:1") {
		t.Errorf("docker images lost the image: %q", out)
	}
	if out := d.CLI(t, "volume", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "vol1") {
		t.Errorf("docker volume ls lost vol1: %q", out)
	}
	if out := d.CLI(t, "logs", "c1"); !strings.Contains(out, "created-before-migration") {
		t.Errorf("docker logs c1 lost its log: %q", out)
	}
	if out := d.CLI(t, "run", "--rm", "--network", "none", "-v", "vol1:/vol", "evictguard.local/busybox:1", "cat", "/vol/data"); strings.TrimSpace(out) != "volume-data" {
		t.Errorf("volume data: %q", out)
	}
	if out := d.CLI(t, "start", "-a", "c1"); strings.TrimSpace(out) != "kept-in-layer" {
		t.Errorf("docker start -a c1 = %q, want the writable-layer change kept-in-layer", out)
	}
}

// checkDaemonJSON asserts that daemon.json has data-root = root, no graph, and every other
// key of the original with its value, in the original order.
func (m *dockerMigration) checkDaemonJSON(t *testing.T, root string) {
	t.Helper()
	b, err := os.ReadFile(m.docker.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var got, orig map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("daemon.json does not parse: %v\n%s", err, b)
	}
	_ = json.Unmarshal([]byte(m.daemonJSON), &orig)
	if got["data-root"] != root || got["graph"] != nil {
		t.Errorf("daemon.json: data-root %v graph %v, want data-root %s and no graph", got["data-root"], got["graph"], root)
	}
	for k, v := range orig {
		if k == "graph" {
			continue
		}
		if gb, _ := json.Marshal(got[k]); string(gb) != mustJSON(v) {
			t.Errorf("daemon.json lost %s: %s, want %s", k, gb, mustJSON(v))
		}
	}
	order := []string{`"log-level"`, `"data-root"`, `"log-driver"`, `"log-opts"`, `"debug"`}
	last := -1
	for _, k := range order {
		i := strings.Index(string(b), k)
		if i < last {
			t.Errorf("daemon.json key order changed:\n%s", b)
			break
		}
		last = i
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// journalOps lists the operations journaled under stateDir.
func journalOps(t *testing.T, stateDir string) []*journal.Operation {
	t.Helper()
	j, err := journal.Open("/", stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

// startKubeletService runs k (prepared, not started) as kubelet.service under sd, restarted
// by systemd, its log in k.Dir/kubelet.log; its root dir is unmounted at cleanup.
func startKubeletService(t *testing.T, sd *harness.Systemd, k *harness.Kubelet) {
	t.Helper()
	sd.WriteUnit(t, "kubelet.service", "[Unit]\nDescription=kubelet (evictguard e2e)\n\n[Service]\nExecStart="+strings.Join(k.Args, " ")+
		"\nRestart=always\nRestartSec=1\nStandardOutput=append:"+filepath.Join(k.Dir, "kubelet.log")+"\nStandardError=inherit\n")
	harness.StartUnit(t, sd, "kubelet.service")
	t.Cleanup(func() {
		if err := harness.UnmountBelow(k.RootDir); err != nil {
			t.Errorf("unmount kubelet root: %v", err)
		}
	})
}

// containerdMigrateArgs is `evictguard migrate` of containerd c (containerd.service under sd)
// with k as kubelet.service, journaling under stateDir.
func containerdMigrateArgs(sd *harness.Systemd, c *harness.Containerd, k *harness.Kubelet, stateDir string, extra ...string) []string {
	return append([]string{"migrate", "--runtime", "containerd", "--bus-address", sd.BusAddress,
		"--containerd-config", c.ConfigPath, "--containerd-socket", c.Address, "--runtime-units", "containerd.service",
		"--kubelet-unit", "kubelet.service", "--healthz", k.HealthzURL(), "--stable-for", "3s", "--state-dir", stateDir, "--yes"}, extra...)
}

// waitRunningContainer waits until the CRI runtime has a running container named name and
// returns its id; it fails the test with the tail of kubelet.service's log (startKubeletService).
func waitRunningContainer(t *testing.T, rt runtimeapi.RuntimeServiceClient, k *harness.Kubelet, name string) string {
	t.Helper()
	var id string
	err := harness.WaitFor(t.Context(), 120*time.Second, nil, func() error {
		resp, err := rt.ListContainers(t.Context(), &runtimeapi.ListContainersRequest{})
		if err != nil {
			return err
		}
		for _, ct := range resp.GetContainers() {
			if ct.GetMetadata().GetName() == name && ct.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
				id = ct.GetId()
				return nil
			}
		}
		return fmt.Errorf("no running %s container among %d", name, len(resp.GetContainers()))
	})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(k.Dir, "kubelet.log"))
		t.Fatalf("the pod is not running: %v\n%s", err, tail(string(b), 3000))
	}
	return id
}
