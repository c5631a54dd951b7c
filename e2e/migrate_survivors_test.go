package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/treecopy"
)

// TestMigrateDockerLiveRestore: dockerd with "live-restore": true keeps containers running
// while docker.service is stopped, from the old root. With one running, `migrate` refuses
// (exit 2, naming it) and changes nothing; once it is stopped, the migration goes through.
func TestMigrateDockerLiveRestore(t *testing.T) {
	harness.RequireRoot(t)
	a, b := harness.TmpFS(t, 96<<20, 20000), harness.TmpFS(t, 96<<20, 20000)
	stateDir := harness.TempDir(t, "evictguard-state")
	sd := harness.StartSystemd(t)
	from, to := filepath.Join(a, "docker"), filepath.Join(b, "docker")
	daemonJSON := `{"data-root": "` + from + `", "live-restore": true}`
	d := harness.StartDockerUnit(t, sd, harness.DockerUnitOptions{DaemonJSON: daemonJSON})
	d.ImportBusybox(t, "evictguard.local/busybox:1")
	d.CLI(t, "run", "-d", "--name", "sleeper", "--network", "none", "evictguard.local/busybox:1", "sleep", "1000000")
	args := []string{"migrate", "--runtime", "docker", "--to", to, "--bus-address", sd.BusAddress, "--docker-socket", d.Socket,
		"--docker-config", d.ConfigPath, "--runtime-units", "docker.service", "--state-dir", stateDir, "--yes"}

	out, errOut, code := runEvictguardEnv(t, nil, args...)
	if code != 2 || !strings.Contains(out+errOut, "live-restore") || !strings.Contains(out+errOut, "sleeper") {
		t.Fatalf("migrate with a running container under live-restore: exit %d, want 2 naming live-restore and the container\n%s\n%s", code, out, errOut)
	}
	if got, _ := os.ReadFile(d.ConfigPath); string(got) != daemonJSON {
		t.Errorf("daemon.json changed by a refused migration: %s", got)
	}
	if ents, _ := os.ReadDir(to); len(ents) != 0 {
		t.Errorf("a refused migration wrote to %s", to)
	}
	if state := strings.TrimSpace(d.CLI(t, "inspect", "-f", "{{.State.Status}}", "sleeper")); state != "running" {
		t.Errorf("the container is %s after the refusal", state)
	}

	d.CLI(t, "stop", "-t", "1", "sleeper")
	out, errOut, code = runEvictguardEnv(t, nil, args...)
	if code != 0 {
		t.Fatalf("migrate with no container running: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out+errOut, "live-restore") {
		t.Errorf("no warning about live-restore:\n%s\n%s", out, errOut)
	}
	if got := strings.TrimSpace(d.CLI(t, "info", "--format", "{{.DockerRootDir}}")); got != to {
		t.Errorf("docker runs on %s, want %s", got, to)
	}
}

// TestMigrateContainerdRunningContainers: containerd's shims keep containers running when
// containerd.service stops (KillMode=process, as packaged), with their root filesystems in
// snapshots under the old root.
//   - A container run with ctr (outside the kubelet's CRI): the stop step finds it still
//     using the old root, fails, and rolls back — containerd runs on the old root again, the
//     container is still running and its files are all there; nothing was removed.
//   - Pods of a kubelet (a static pod): the migration stops their sandboxes through CRI after
//     the kubelet, moves the root, and the kubelet creates the pod again, Running, on the new
//     root.
func TestMigrateContainerdRunningContainers(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	a, b := harness.TmpFS(t, 128<<20, 20000), harness.TmpFS(t, 128<<20, 20000)
	stateDir := harness.TempDir(t, "evictguard-state")
	sd := harness.StartSystemd(t)
	from, to := filepath.Join(a, "containerd"), filepath.Join(b, "containerd")
	c := harness.StartContainerdUnit(t, sd, harness.ContainerdOptions{Root: from})
	c.Ctr(t, "images", "import", "--snapshotter", "native", ociBusyboxTarCmd(t, "evictguard.local/pause:1", []string{"/bin/sleep", "1000000"}))
	c.Ctr(t, "images", "import", "--snapshotter", "native", ociBusyboxTar(t, "evictguard.local/busybox:1"))

	k := harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: c, StaticPods: map[string]string{"app.yaml": `apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: default
spec:
  hostNetwork: true
  containers:
  - name: app
    image: evictguard.local/busybox:1
    imagePullPolicy: Never
    command: ["/bin/sleep", "1000000"]
`}})
	startKubeletService(t, sd, k)
	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	before := waitRunningContainer(t, rt, k, "app")
	args := containerdMigrateArgs(sd, c, k, stateDir, "--to", to)

	t.Run("a container outside the kubelet keeps the old root in use: rolled back", func(t *testing.T) {
		// runc's state beside the test's containerd, not in the host's /run/containerd.
		c.Ctr(t, "run", "-d", "--snapshotter", "native", "--runc-root", filepath.Join(c.Dir, "runc-outsider"),
			"evictguard.local/busybox:1", "outsider", "/bin/sleep", "1000000")
		defer c.Ctr(t, "task", "kill", "-s", "SIGKILL", "outsider")
		// containerd rewrites its snapshot metadata and the kubelet its pods' snapshots across
		// the restart of a rollback; the images' content must not change, and the running
		// container's root filesystem must still be there.
		contentDigest := func() (string, string) {
			var lines strings.Builder
			d, err := treecopy.Digest(ctx, from, treecopy.DigestOptions{Mtime: true, Lines: &lines, Skip: func(rel string) bool {
				top, _, _ := strings.Cut(rel, "/")
				return top != "io.containerd.content.v1.content"
			}})
			if err != nil {
				t.Fatal(err)
			}
			return d, lines.String()
		}
		digest, lines := contentDigest()
		out, errOut, code := runEvictguardEnv(t, nil, args...)
		if code == 0 || !strings.Contains(out+errOut, "still in use by mounts") || !strings.Contains(out+errOut, "rolled back") {
			t.Fatalf("migrate with a container outside CRI: exit %d, want a rollback naming the mounts\n%s\n%s", code, out, errOut)
		}
		t.Logf("refused:\n%s", errOut)
		if tasks := c.Ctr(t, "task", "ls"); !strings.Contains(tasks, "outsider") || !strings.Contains(tasks, "RUNNING") {
			t.Errorf("the outside container is not running after the rollback: %s", tasks)
		}
		if got, gotLines := contentDigest(); got != digest {
			t.Errorf("the image content in the old root changed:\nbefore:\n%s\nafter:\n%s", lines, gotLines)
		}
		// Its root filesystem is mounted in the namespace containerd runs in (the sandboxed
		// systemd's): look through that process's root.
		pins, err := migration.FindPins("/", from)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range pins {
			if strings.HasSuffix(p.Mountpoint, "/outsider/rootfs") {
				found = true
				if _, err := os.Stat(fmt.Sprintf("/proc/%d/root%s/bin/busybox", p.PID, p.Mountpoint)); err != nil {
					t.Errorf("the running container lost its root filesystem: %v", err)
				}
			}
		}
		if !found {
			t.Errorf("the running container's root filesystem is not mounted from the old root after the rollback: %v", pins)
		}
		ops := journalOps(t, stateDir)
		if len(ops) != 1 || ops[0].State != journal.StateRolledBack {
			t.Fatalf("journal: %+v", ops)
		}
		waitRunningContainer(t, rt, k, "app") // the kubelet's pod runs again after the rollback
	})
	c.Ctr(t, "task", "delete", "-f", "outsider")
	c.Ctr(t, "containers", "rm", "outsider")

	t.Run("the kubelet's pods are stopped through CRI and created again on the new root", func(t *testing.T) {
		// The same target after the rollback above: the operator says so.
		out, errOut, code := runEvictguardEnv(t, nil, append(slices.Clone(args), "--retry")...)
		if code != 0 {
			t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
		}
		after := waitRunningContainer(t, rt, k, "app")
		if after == before {
			t.Errorf("the app container %s was not recreated", after)
		}
		fsi, err := runtimeapi.NewImageServiceClient(conn).ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if mp := fsi.GetImageFilesystems()[0].GetFsId().GetMountpoint(); !strings.HasPrefix(mp, to) {
			t.Errorf("CRI image filesystem %s, want under %s", mp, to)
		}
		if pins, err := migration.FindPins("/", from); err != nil || len(pins) != 0 {
			t.Errorf("the old root is still used: %v %v", pins, err)
		}
		ops := journalOps(t, stateDir)
		last := ops[len(ops)-1]
		if last.State != journal.StateDone {
			t.Fatalf("journal: %+v", last)
		}
		for _, h := range last.History {
			t.Logf("  %-14s %s", h.Step, h.Note)
			if h.Step == migration.StepStop && !strings.Contains(h.Note, "default/app-") {
				t.Errorf("the stop step does not name the pod it stopped: %q", h.Note)
			}
		}
		resp, err := http.Get(k.HealthzURL())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})
}

// TestMigrateDurableBeforeConfig: the copy goes to a real ext4 filesystem on a loop device,
// whose writes sit in the page cache until written back. evictguard is killed right after the
// verify step — before the config step points dockerd at the new root — and the device's
// writeback accounting (debugfs bdi stats) must show nothing dirty and nothing in flight:
// the new root was on the disk before anything depended on it. The migration then resumes.
func TestMigrateDurableBeforeConfig(t *testing.T) {
	harness.RequireRoot(t)
	src := harness.TmpFS(t, 256<<20, 20000)
	disk := harness.LoopDisk(t, harness.DiskOptions{Size: 512 << 20, FS: "ext4", Name: "target"})
	stateDir := harness.TempDir(t, "evictguard-state")
	sd := harness.StartSystemd(t)
	from, to := filepath.Join(src, "docker"), filepath.Join(disk.Mountpoint, "docker")
	d := harness.StartDockerUnit(t, sd, harness.DockerUnitOptions{DaemonJSON: `{"data-root": "` + from + `"}`})
	d.ImportBusybox(t, "evictguard.local/busybox:1")
	d.CLI(t, "volume", "create", "data")
	// 96 MiB that the page cache would hold for 30 s (vm.dirty_expire_centisecs) if nobody
	// synced it: far below the background writeback threshold on this machine.
	d.CLI(t, "run", "--rm", "--network", "none", "-v", "data:/data", "evictguard.local/busybox:1", "sh", "-c",
		"dd if=/dev/urandom of=/data/blob bs=1M count=96 2>/dev/null && sync")
	base := []string{"migrate", "--runtime", "docker", "--bus-address", sd.BusAddress, "--docker-socket", d.Socket,
		"--docker-config", d.ConfigPath, "--runtime-units", "docker.service", "--state-dir", stateDir, "--yes"}
	args := append(slices.Clone(base), "--to", to)

	stats := bdiStats(t, disk.Device)
	disk.Sync(t)
	dirty0, writeback0 := stats()
	out, errOut, code := runEvictguardEnv(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=" + migration.StepVerify}, args...)
	if code != -1 || !strings.Contains(errOut, "TEST HOOK: killing evictguard") {
		t.Fatalf("crash after verify: exit %d, want killed\n%s\n%s", code, out, errOut)
	}
	dirty, writeback := stats()
	t.Logf("after the verify step: %d kB dirty, %d kB under writeback on %s (before the migration: %d kB, %d kB)", dirty, writeback, disk.Device, dirty0, writeback0)
	// What may remain is the filesystem's own metadata written after the sync (a journal
	// commit, atime): kilobytes, against the ~100 MiB the copy wrote.
	if dirty+writeback-writeback0 > 1024 {
		t.Errorf("the new root was not on the device before the config step: %d kB dirty, %d kB under writeback", dirty, writeback)
	}
	if cfg, _ := os.ReadFile(d.ConfigPath); strings.Contains(string(cfg), to) {
		t.Fatalf("daemon.json already points at %s after the verify step", to)
	}
	out, errOut, code = runEvictguardEnv(t, nil, append(base, "--resume")...)
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := strings.TrimSpace(d.CLI(t, "info", "--format", "{{.DockerRootDir}}")); got != to {
		t.Errorf("docker runs on %s, want %s", got, to)
	}
	// The control: the same amount written without a sync is still in the page cache.
	fill(t, filepath.Join(disk.Mountpoint, "unsynced"), 96<<20)
	if dirty, writeback := stats(); dirty+writeback < 48<<10 {
		t.Errorf("the measurement cannot see unsynced data: 96 MiB written, %d kB dirty, %d kB under writeback", dirty, writeback)
	} else {
		t.Logf("control: 96 MiB written without a sync: %d kB dirty, %d kB under writeback", dirty, writeback)
	}
}

// bdiStats returns a reader of the dirty and writeback kB of a block device's backing device
// info (debugfs, mounted for the test when the machine has it elsewhere or not at all).
func bdiStats(t *testing.T, device string) func() (dirty, writeback int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		t.Fatal(err)
	}
	dbg := "/sys/kernel/debug"
	if _, err := os.Stat(filepath.Join(dbg, "bdi")); err != nil {
		dbg = harness.TempDir(t, "debugfs")
		if err := unix.Mount("debugfs", dbg, "debugfs", 0, ""); err != nil {
			harness.Unavailable(t, "mount debugfs: %v", err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dbg, 0) })
	}
	file := filepath.Join(dbg, "bdi", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), "stats")
	return func() (int64, int64) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var dirty, wb int64 = -1, -1
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				switch f[0] {
				case "BdiDirty:", "BdiReclaimable:": // renamed in Linux 6.x
					_, _ = fmt.Sscan(f[1], &dirty)
				case "BdiWriteback:":
					_, _ = fmt.Sscan(f[1], &wb)
				}
			}
		}
		if dirty < 0 || wb < 0 {
			t.Fatalf("%s has no BdiDirty (BdiReclaimable)/BdiWriteback:\n%s", file, b)
		}
		return dirty, wb
	}
}
