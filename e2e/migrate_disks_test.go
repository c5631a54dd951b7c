package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/treecopy"
)

// overlayNode is a node as it is in the field: dockerd with overlay2 on an ext4 disk (the
// seed's "/"), a second xfs disk for /data, an image that looks pulled (LayeredImageTar), and
// containers: one running with a restart policy and a volume, one running without, one
// exited with changes in its writable layer.
type overlayNode struct {
	sd         *harness.Systemd
	docker     *harness.Docker
	root, data *harness.Disk
	from, to   string
	stateDir   string
}

func startOverlayNode(t *testing.T) *overlayNode {
	t.Helper()
	harness.RequireRoot(t)
	n := &overlayNode{
		root: harness.LoopDisk(t, harness.DiskOptions{Size: 768 << 20, FS: "ext4", Name: "root"}),
		data: harness.LoopDisk(t, harness.DiskOptions{Size: 768 << 20, FS: "xfs", Name: "data"}),
	}
	n.from, n.to = filepath.Join(n.root.Mountpoint, "docker"), filepath.Join(n.data.Mountpoint, "docker")
	n.stateDir = harness.TempDir(t, "evictguard-state")
	n.sd = harness.StartSystemd(t)
	n.docker = harness.StartDockerUnit(t, n.sd, harness.DockerUnitOptions{StorageDriver: "overlay2",
		DaemonJSON: `{"data-root": "` + n.from + `", "log-driver": "json-file"}`})
	d := n.docker
	d.CLI(t, "load", "-i", harness.LayeredImageTar(t, "evictguard.local/layered:1"))
	d.CLI(t, "volume", "create", "vol")
	d.CLI(t, "run", "-d", "--name", "svc", "--restart", "always", "--network", "none", "-v", "vol:/vol", "evictguard.local/layered:1",
		"sh", "-c", "[ -f /vol/first ] || date > /vol/first; echo svc started; echo changed > /data/changed; exec sleep 1000000")
	d.CLI(t, "run", "-d", "--name", "plain", "--network", "none", "evictguard.local/layered:1",
		"sh", "-c", "echo plain started; rm /data/added; exec sleep 1000000")
	d.CLI(t, "run", "--name", "exited", "--network", "none", "evictguard.local/layered:1",
		"sh", "-c", "echo exited ran; mkdir -p /data/new/deep; echo x > /data/new/deep/f; rm -rf /data/dir; ln /data/big /data/big2")
	return n
}

func (n *overlayNode) args(extra ...string) []string {
	return append([]string{"migrate", "--runtime", "docker", "--bus-address", n.sd.BusAddress, "--docker-socket", n.docker.Socket,
		"--docker-config", n.docker.ConfigPath, "--runtime-units", "docker.service", "--state-dir", n.stateDir, "--yes"}, extra...)
}

// overlayState is what must not change across a migration, as the runtime reports it.
type overlayState struct {
	image, export, diff, logs, volume string
}

func (n *overlayNode) state(t *testing.T) overlayState {
	t.Helper()
	d := n.docker
	sum := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("docker", append([]string{"-H", "unix://" + d.Socket}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker %v: %v", args, err)
		}
		s := sha256.Sum256(out)
		return hex.EncodeToString(s[:8])
	}
	return overlayState{
		image:  sum("save", "evictguard.local/layered:1"),
		export: sum("export", "exited"),
		diff:   sortedLines(d.CLI(t, "diff", "exited")), // in directory order, which differs between filesystems
		logs:   d.CLI(t, "logs", "exited"),
		volume: d.CLI(t, "run", "--rm", "--network", "none", "-v", "vol:/vol", "evictguard.local/layered:1", "cat", "/vol/first"),
	}
}

// checkView asserts what a running container of the image sees, from inside and, for the
// extended attribute, through its merged directory on the host.
func (n *overlayNode) checkView(t *testing.T, name string) {
	t.Helper()
	d := n.docker
	out := d.CLI(t, "exec", name, "sh", "-c", "ls /data/replace; [ -e /data/gone ] && echo gone-present; stat -c '%i' /data/hl1 /data/hl2; stat -c '%a %u' /data/suid /data/dir")
	f := strings.Fields(out)
	if len(f) != 7 || f[0] != "new" || f[1] == "gone-present" || f[1] != f[2] || f[3] != "4755" || f[5] != "750" || f[6] != "1000" {
		t.Errorf("%s sees %q: want only replace/new, no gone, hl1 and hl2 one inode, suid 4755, dir 750 owned by 1000", name, out)
	}
	// The extended attribute, in the image layer that holds the file (the merged directory is
	// mounted in dockerd's namespace, the layers are plain directories on the disk).
	found := false
	for _, l := range strings.Split(strings.TrimSpace(d.CLI(t, "inspect", "-f", "{{.GraphDriver.Data.LowerDir}}", name)), ":") {
		p := filepath.Join(l, "data/xattr")
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		found = true
		buf := make([]byte, 64)
		if sz, err := unix.Getxattr(p, "user.evictguard", buf); err != nil || string(buf[:sz]) != "layered" {
			t.Errorf("%s: user.evictguard on %s = %q, %v", name, p, buf[:max(sz, 0)], err)
		}
	}
	if !found {
		t.Errorf("%s: no image layer holds data/xattr", name)
	}
}

func sortedLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

// TestMigrateOverlay2RealDisks moves dockerd's overlay2 data root from an ext4 disk to an xfs
// disk on a node with running containers (no live-restore: stopping docker stops them). The
// image, the exited container's export, diff and logs, and the volume are identical after;
// the container with a restart policy runs again and sees exactly the layered view (whiteout,
// opaque directory, hard links, setuid, xattr); the one without stays stopped, with its
// writable layer intact; the old root is gone and nothing uses it.
func TestMigrateOverlay2RealDisks(t *testing.T) {
	n := startOverlayNode(t)
	n.checkView(t, "svc")
	before := n.state(t)
	plainDiff := sortedLines(n.docker.CLI(t, "diff", "plain"))

	out, errOut, code := runEvictguardEnv(t, nil, n.args("--to", n.to)...)
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("migrate:\n%s", out)
	if got := strings.TrimSpace(n.docker.CLI(t, "info", "--format", "{{.DockerRootDir}} {{.Driver}}")); got != n.to+" overlay2" {
		t.Fatalf("docker info: %q, want %s overlay2", got, n.to)
	}
	if after := n.state(t); after != before {
		t.Errorf("state changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if st := strings.TrimSpace(n.docker.CLI(t, "inspect", "-f", "{{.State.Status}}", "svc")); st != "running" {
		t.Errorf("svc (restart always) is %s after the migration", st)
	}
	n.checkView(t, "svc")
	if st := strings.TrimSpace(n.docker.CLI(t, "inspect", "-f", "{{.State.Status}}", "plain")); st != "exited" {
		t.Errorf("plain (no restart policy) is %s after the migration", st)
	}
	if got := sortedLines(n.docker.CLI(t, "diff", "plain")); got != plainDiff {
		t.Errorf("plain's writable layer changed: %q, was %q", got, plainDiff)
	}
	if _, err := os.Stat(n.from); !os.IsNotExist(err) {
		t.Errorf("old root %s still exists: %v", n.from, err)
	}
	if pins, err := migration.FindPins("/", n.to); err != nil || len(pins) == 0 {
		t.Logf("mounts using the new root (running containers): %d %v", len(pins), err)
	}
}

// TestMigrateOverlay2CrashRealDisks kills evictguard (SIGKILL through the journaled test hook)
// in the pre-copy, in the stopped window (after the delta copy) and after the config step, on
// the overlay2 node with running containers; `--resume` and `--rollback` must each leave the
// runtime's view identical: image, exited container, volume, and the layered view of the
// restarted container.
func TestMigrateOverlay2CrashRealDisks(t *testing.T) {
	n := startOverlayNode(t)
	before := n.state(t)
	crashMatrix(t, n.args, n.from, n.to, func(step, finish, root string) {
		// Containers with a restart policy come back when dockerd starts.
		err := harness.WaitFor(t.Context(), 60*time.Second, nil, func() error {
			if st := strings.TrimSpace(n.docker.CLI(t, "inspect", "-f", "{{.State.Status}}", "svc")); st != "running" {
				return fmt.Errorf("svc is %s", st)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s after %s: %v", finish, step, err)
		}
		if got := strings.TrimSpace(n.docker.CLI(t, "info", "--format", "{{.DockerRootDir}}")); got != root {
			t.Fatalf("%s after a crash at %s: docker runs on %s, want %s", finish, step, got, root)
		}
		if after := n.state(t); after != before {
			t.Errorf("%s after a crash at %s changed the state:\nbefore %+v\nafter  %+v", finish, step, before, after)
		}
		n.checkView(t, "svc")
	})
}

// crashMatrix kills evictguard (SIGKILL through the journaled test hook) after the pre-copy,
// after the delta pass (in the stopped window) and after the config step, and finishes each
// interrupted migration once with --resume and once with --rollback; check then asserts
// that the runtime's view is intact on root, the root it must run on. After a resume the old
// root must be gone; after a rollback the abandoned copy must be unused, and is removed for
// the next round. The migrations alternate between from and to.
func crashMatrix(t *testing.T, args func(extra ...string) []string, from, to string, check func(step, finish, root string)) {
	t.Helper()
	cur, other := from, to
	for _, step := range []string{migration.StepPrecopy, migration.StepDelta, migration.StepConfig} {
		for _, finish := range []string{"--resume", "--rollback"} {
			out, errOut, code := runEvictguardEnv(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=" + step}, args("--to", other, "--retry")...)
			if code != -1 || !strings.Contains(errOut, "TEST HOOK: killing evictguard") {
				t.Fatalf("crash after %s: exit %d, want killed\n%s\n%s", step, code, out, errOut)
			}
			out, errOut, code = runEvictguardEnv(t, nil, args(finish)...)
			if code != 0 {
				t.Fatalf("%s after a crash at %s: exit %d\n%s\n%s", finish, step, code, out, errOut)
			}
			root := cur
			if finish == "--resume" {
				root = other
			}
			check(step, finish, root)
			if finish == "--resume" {
				if _, err := os.Stat(cur); !os.IsNotExist(err) {
					t.Errorf("after --resume the old root %s still exists: %v", cur, err)
				}
				cur, other = other, cur
			} else {
				if pins, err := migration.FindPins("/", other); err != nil || len(pins) > 0 {
					t.Errorf("after --rollback the abandoned copy %s is in use: %v %v", other, pins, err)
				}
				if err := os.RemoveAll(other); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("crash after %-8s → %-10s ok (runtime on %s)", step, finish, root)
		}
	}
}

// containerdNode is the containerd counterpart of overlayNode: containerd with the overlayfs
// snapshotter on an ext4 disk, a second xfs disk, and kubelet.service running a pod of the
// layered image.
type containerdNode struct {
	c        *harness.Containerd
	k        *harness.Kubelet
	sd       *harness.Systemd
	rt       runtimeapi.RuntimeServiceClient
	img      runtimeapi.ImageServiceClient
	from, to string
	stateDir string
}

func startContainerdNode(t *testing.T) *containerdNode {
	t.Helper()
	harness.RequireRoot(t)
	root := harness.LoopDisk(t, harness.DiskOptions{Size: 512 << 20, FS: "ext4", Name: "root"})
	data := harness.LoopDisk(t, harness.DiskOptions{Size: 512 << 20, FS: "xfs", Name: "data"})
	n := &containerdNode{from: filepath.Join(root.Mountpoint, "containerd"), to: filepath.Join(data.Mountpoint, "containerd"),
		stateDir: harness.TempDir(t, "evictguard-state"), sd: harness.StartSystemd(t)}
	n.c = harness.StartContainerdUnit(t, n.sd, harness.ContainerdOptions{Root: n.from, Snapshotter: "overlayfs"})
	n.c.Ctr(t, "images", "import", "--snapshotter", "overlayfs", ociBusyboxTarCmd(t, "evictguard.local/pause:1", []string{"/bin/sleep", "1000000"}))
	n.c.Ctr(t, "images", "import", "--snapshotter", "overlayfs", harness.LayeredImageTar(t, "evictguard.local/layered:1"))
	n.k = harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: n.c, RootDir: filepath.Join(root.Mountpoint, "kubelet"),
		StaticPods: map[string]string{"layered.yaml": `apiVersion: v1
kind: Pod
metadata:
  name: layered
  namespace: default
spec:
  hostNetwork: true
  containers:
  - name: app
    image: evictguard.local/layered:1
    imagePullPolicy: Never
`}})
	startKubeletService(t, n.sd, n.k)
	conn, err := grpc.NewClient("unix://"+n.c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.rt, n.img = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	return n
}

func (n *containerdNode) args(extra ...string) []string {
	return containerdMigrateArgs(n.sd, n.c, n.k, n.stateDir, extra...)
}

// waitApp waits for the pod's container to run and returns its id.
func (n *containerdNode) waitApp(t *testing.T) string {
	t.Helper()
	return waitRunningContainer(t, n.rt, n.k, "app")
}

// checkView asserts the layered view from inside the pod's container.
func (n *containerdNode) checkView(t *testing.T, id string) {
	t.Helper()
	r, err := n.rt.ExecSync(t.Context(), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 10,
		Cmd: []string{"sh", "-c", "ls /data/replace; [ -e /data/gone ] && echo gone-present; stat -c '%i' /data/hl1 /data/hl2; stat -c '%a %u' /data/suid /data/dir"}})
	if err != nil || r.GetExitCode() != 0 {
		t.Fatalf("exec in %s: %v %s", id, err, r.GetStderr())
	}
	f := strings.Fields(string(r.GetStdout()))
	if len(f) != 7 || f[0] != "new" || f[1] != f[2] || f[3] != "4755" || f[5] != "750" || f[6] != "1000" {
		t.Errorf("the pod's container sees %q: want only replace/new, no gone, hl1 and hl2 one inode, suid 4755, dir 750 owned by 1000", r.GetStdout())
	}
}

// content digests the content store (the images' blobs) under root.
func (n *containerdNode) content(t *testing.T, root string) string {
	t.Helper()
	d, err := treecopy.Digest(t.Context(), root, treecopy.DigestOptions{Mtime: true, Skip: func(rel string) bool {
		top, _, _ := strings.Cut(rel, "/")
		return top != "io.containerd.content.v1.content"
	}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkImages asserts that ctr finds every image complete.
func (n *containerdNode) checkImages(t *testing.T) {
	t.Helper()
	check := strings.Split(strings.TrimSpace(n.c.Ctr(t, "images", "check")), "\n")
	if len(check) < 3 {
		t.Errorf("ctr images check lists %d lines, want the two images", len(check))
	}
	for _, l := range check[1:] {
		if !strings.Contains(l, "complete") {
			t.Errorf("ctr images check: %s", l)
		}
	}
}

// TestMigrateContainerdOverlayfsRealDisks moves containerd's root, overlayfs snapshotter, from
// an ext4 disk to an xfs disk under a kubelet running a pod of the layered image. The pod's
// sandbox is stopped through CRI, the kubelet creates the pod again on the new root, and its
// container sees the same layered view; the image content is identical and complete.
func TestMigrateContainerdOverlayfsRealDisks(t *testing.T) {
	n := startContainerdNode(t)
	before := n.waitApp(t)
	n.checkView(t, before)
	digest := n.content(t, n.from)
	out, errOut, code := runEvictguardEnv(t, nil, n.args("--to", n.to)...)
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	after := n.waitApp(t)
	if after == before {
		t.Errorf("the pod's container %s was not created again", after)
	}
	n.checkView(t, after)
	if got := n.content(t, n.to); got != digest {
		t.Errorf("the image content differs after the move")
	}
	n.checkImages(t)
	if _, err := os.Stat(n.from); !os.IsNotExist(err) {
		t.Errorf("old root %s still exists: %v", n.from, err)
	}
}

// TestMigrateContainerdOverlayfsCrashRealDisks: the same node, evictguard SIGKILLed in the
// pre-copy, in the stopped window and after the config step; `--resume` and `--rollback`
// each leave the images identical and complete and the pod running with the same view, on
// the root they say.
func TestMigrateContainerdOverlayfsCrashRealDisks(t *testing.T) {
	n := startContainerdNode(t)
	n.waitApp(t)
	digest := n.content(t, n.from)
	crashMatrix(t, n.args, n.from, n.to, func(step, finish, root string) {
		n.checkView(t, n.waitApp(t))
		fsi, err := n.img.ImageFsInfo(t.Context(), &runtimeapi.ImageFsInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if mp := fsi.GetImageFilesystems()[0].GetFsId().GetMountpoint(); !strings.HasPrefix(mp, root+"/") {
			t.Errorf("%s after a crash at %s: containerd's image filesystem is %s, want under %s", finish, step, mp, root)
		}
		if got := n.content(t, root); got != digest {
			t.Errorf("%s after a crash at %s: the image content under %s differs", finish, step, root)
		}
		n.checkImages(t)
	})
}
