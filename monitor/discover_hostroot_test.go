package monitor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// TestDiscoverCRIThroughLongHostRoot: the host root reaches the node's /tmp through a symlink
// (as the e2e host roots and a DaemonSet's /host with symlinked dirs do) and is deep enough
// that <host root>/<socket> exceeds the 107-byte unix socket limit. CRI ImageFsInfo must
// still be asked (through the resolved path) instead of silently falling back to the
// containerd defaults, and mountpoints must be matched after resolving symlinks.
func TestDiscoverCRIThroughLongHostRoot(t *testing.T) {
	image := "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
	sock := fakeCRIServer(t, image) // /tmp/egNNN/cri.sock
	root := filepath.Join(t.TempDir(), strings.Repeat("h", 100))
	mkdirs(t, root, "var/lib/kubelet", strings.TrimPrefix(image, "/"))
	if err := os.Symlink(filepath.Dir(filepath.Dir(sock)), filepath.Join(root, "tmp")); err != nil {
		t.Fatal(err)
	}
	if hp := hostfs.Root(root).Path(sock); len(hp) <= maxSocketPath {
		t.Fatalf("host path %s is short enough to dial; the test needs a longer one", hp)
	}
	l, err := DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), Runtime: RuntimeContainerd,
		CRIEndpoint: "unix://" + sock, DockerSocket: filepath.Join(root, "none.sock"), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	img := l.ByRole(RoleImageFs)
	if img.Path != image || img.Source != "CRI ImageFsInfo" {
		t.Errorf("imagefs %s from %q, want %s from CRI ImageFsInfo; warnings %v", img.Path, img.Source, image, l.Warnings)
	}

	// A nodefs reached through the symlink gets the mount of the symlink's target.
	tmpRoot := filepath.Join(root, "tmp", filepath.Base(filepath.Dir(sock)))
	l, err = DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), KubeletRootDir: hostfs.Root(root).NodePath(tmpRoot),
		Runtime: RuntimeContainerd, CRIEndpoint: "unix://" + sock, DockerSocket: filepath.Join(root, "none.sock"), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := readMounts("")
	if err != nil {
		t.Skip("no mount table:", err)
	}
	resolved, _ := filepath.EvalSymlinks(tmpRoot)
	dev, _ := deviceOf(resolved)
	major, minor := devMajorMinor(dev)
	want, _ := findMount(mounts, resolved, major, minor)
	if n := l.ByRole(RoleNodeFs); n.Mountpoint != hostfs.Root(root).NodePath(want.Mountpoint) || n.Device != want.Source {
		t.Errorf("nodefs through a symlink: mountpoint %q device %q, want %q %q", n.Mountpoint, n.Device, want.Mountpoint, want.Source)
	}
}
