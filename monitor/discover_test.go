package monitor

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/evictguard/evictguard/internal/hostfs"
)

func TestParseMountInfo(t *testing.T) {
	data := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:17 / /data rw,relatime shared:2 - ext4 /dev/sdb1 rw
31 22 0:45 / /var/lib/kubelet/pods/x/volumes/my\040vol rw - tmpfs tmpfs rw,size=10m
32 30 8:17 /docker /var/lib/docker rw - ext4 /dev/sdb1 rw
33 22 8:1 /var/lib/kubelet /var/lib/kubelet rw shared:3 - ext4 /dev/sda1 rw
34 30 8:17 /containerd /data/containerd rw - ext4 /dev/sdb1 rw
`)
	m, err := parseMountInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 6 || m[2].Mountpoint != "/var/lib/kubelet/pods/x/volumes/my vol" || m[3].Root != "/docker" {
		t.Fatalf("parsed %+v", m)
	}
	tests := []struct {
		path         string
		major, minor uint32
		wantMount    string
		wantDevice   string
	}{
		{"/var/lib/kubelet", 8, 1, "/", "/dev/sda1"},
		{"/data/docker", 8, 17, "/data", "/dev/sdb1"},
		{"/var/lib/docker/overlay2", 8, 17, "/var/lib/docker", "/dev/sdb1"},
		{"/datax", 8, 1, "/", "/dev/sda1"},
		// the kubelet bind-mounts its root dir onto itself: nodefs is still "/"
		{"/var/lib/kubelet", 8, 1, "/", "/dev/sda1"},
		{"/var/lib/kubelet/pods", 8, 1, "/", "/dev/sda1"},
		// a runtime's data root bound onto itself below the filesystem's mountpoint
		{"/data/containerd/io.containerd.snapshotter.v1.overlayfs", 8, 17, "/data", "/dev/sdb1"},
	}
	for _, tc := range tests {
		got, ok := findMount(m, tc.path, tc.major, tc.minor)
		if !ok || got.Mountpoint != tc.wantMount || got.Source != tc.wantDevice {
			t.Errorf("findMount(%s) = %+v, want %s on %s", tc.path, got, tc.wantMount, tc.wantDevice)
		}
	}
	if _, err := parseMountInfo([]byte("garbage\n")); err == nil {
		t.Error("malformed mountinfo parsed without error")
	}
}

func TestRuntimeConfigs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The incident's daemon.json uses the legacy "graph".
	if got, found, err := dockerDataRoot(write("graph.json", `{"graph": "/data/docker", "storage-driver": "aufs"}`)); err != nil || !found || got != "/data/docker" {
		t.Errorf("graph: %q %v %v", got, found, err)
	}
	if got, _, err := dockerDataRoot(write("dr.json", `{"data-root": "/mnt/d", "graph": "/old"}`)); err != nil || got != "/mnt/d" {
		t.Errorf("data-root: %q %v", got, err)
	}
	if _, found, err := dockerDataRoot(filepath.Join(dir, "missing.json")); found || err != nil {
		t.Errorf("missing: %v %v", found, err)
	}
	if _, _, err := dockerDataRoot(write("bad.json", `{`)); err == nil {
		t.Error("bad json: no error")
	}
	ctd := write("config.toml", `version = 2
# root = "/commented"
root = "/srv/containerd" # trailing comment
state = "/run/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  root = "/not/this"
`)
	if got, found, err := tomlString(ctd, "", "root"); err != nil || !found || got != "/srv/containerd" {
		t.Errorf("containerd root: %q %v %v", got, found, err)
	}
	crio := write("storage.conf", "[storage]\ndriver = \"overlay\"\ngraphroot = '/var/lib/crio-store'\n[storage.options]\n")
	if got, found, err := tomlString(crio, "storage", "graphroot"); err != nil || !found || got != "/var/lib/crio-store" {
		t.Errorf("crio graphroot: %q %v %v", got, found, err)
	}
}

// fakeDocker serves GET /info on a unix socket.
func fakeDocker(t *testing.T, rootDir string) string {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/info" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"DockerRootDir":"` + rootDir + `","Driver":"overlay2"}`))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return sock
}

type fakeCRI struct {
	runtimeapi.UnimplementedImageServiceServer
	image, container string
}

func (f *fakeCRI) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	r := &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: f.image}}}}
	if f.container != "" {
		r.ContainerFilesystems = []*runtimeapi.FilesystemUsage{{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: f.container}}}
	}
	return r, nil
}

func fakeCRIServer(t *testing.T, image string) string {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(s, &fakeCRI{image: image})
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return sock
}

// shortTempDir keeps unix socket paths under the 108-byte limit.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "eg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiscoverFixture runs discovery on a fixture host root (one filesystem, no root needed).
func TestDiscoverFixture(t *testing.T) {
	root := t.TempDir()
	mkdirs(t, root, "var/lib/kubelet", "data/docker/containers", "var/log/pods/ns_pod_uid/c", "var/log/containers", "etc/docker", "buf")
	if err := os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte(`{"graph": "/data/docker"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/var/log/pods/ns_pod_uid/c/0.log", filepath.Join(root, "var/log/containers/pod_ns_c-123.log")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		opts        DiscoverOptions
		wantRuntime string
		wantImage   string
		wantSource  string
		wantCRI     bool // Layout.CRISocket is the endpoint's socket
	}{
		{name: "daemon.json graph", opts: DiscoverOptions{Runtime: RuntimeDocker, DockerSocket: filepath.Join(root, "none.sock")},
			wantRuntime: RuntimeDocker, wantImage: "/data/docker", wantSource: "/etc/docker/daemon.json data-root"},
		{name: "docker API wins", opts: DiscoverOptions{DockerSocket: fakeDocker(t, "/var/lib/kubelet")},
			wantRuntime: RuntimeDocker, wantImage: "/var/lib/kubelet", wantSource: "docker API DockerRootDir"},
		{name: "CRI ImageFsInfo", opts: DiscoverOptions{CRIEndpoint: "unix://" + fakeCRIServer(t, "/data/containerd/io.containerd.snapshotter.v1.overlayfs")},
			wantRuntime: "", wantImage: "/data/containerd/io.containerd.snapshotter.v1.overlayfs", wantSource: "CRI ImageFsInfo", wantCRI: true},
	}
	mkdirs(t, root, "data/containerd/io.containerd.snapshotter.v1.overlayfs")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.HostRoot = hostfs.Root(root)
			tc.opts.ExtraLogDirs = []string{"/buf", "/missing"}
			tc.opts.Timeout = time.Second
			l, err := DiscoverFilesystems(t.Context(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if l.Runtime != tc.wantRuntime {
				t.Errorf("runtime %q, want %q", l.Runtime, tc.wantRuntime)
			}
			if want := strings.TrimPrefix(tc.opts.CRIEndpoint, "unix://"); (l.CRISocket != "") != tc.wantCRI || tc.wantCRI && l.CRISocket != want {
				t.Errorf("CRI socket %q, want %q", l.CRISocket, want)
			}
			n, img := l.ByRole(RoleNodeFs), l.ByRole(RoleImageFs)
			if n.Path != "/var/lib/kubelet" || img.Path != tc.wantImage || img.Source != tc.wantSource {
				t.Errorf("nodefs %+v imagefs %+v", n, img)
			}
			if l.DedicatedImageFs || img.SameAs != "nodefs" {
				t.Errorf("one filesystem: dedicated=%v sameAs=%q", l.DedicatedImageFs, img.SameAs)
			}
			var logs []string
			for _, fs := range l.Filesystems {
				if fs.Role == RoleLogs {
					logs = append(logs, fs.Path)
				}
			}
			want := map[string]bool{"/var/log": true, "/var/log/pods": true, "/buf": true}
			for _, p := range logs {
				delete(want, p)
			}
			if len(want) > 0 {
				t.Errorf("log dirs %v lack %v", logs, want)
			}
			if n.Mountpoint == "" || n.Device == "" {
				t.Errorf("nodefs mount not resolved: %+v", n)
			}
			found := false
			for _, w := range l.Warnings {
				found = found || strings.Contains(w, "/missing")
			}
			if !found {
				t.Errorf("no warning for the missing extra log dir: %v", l.Warnings)
			}
		})
	}
}

func TestDiscoverNoKubelet(t *testing.T) {
	root := t.TempDir()
	l, err := DiscoverFilesystems(t.Context(), DiscoverOptions{HostRoot: hostfs.Root(root), DockerSocket: filepath.Join(root, "x")})
	if err != nil {
		t.Fatal(err)
	}
	if n := l.ByRole(RoleNodeFs); n.Path != "/" || l.Runtime != "" || len(l.Warnings) < 2 {
		t.Fatalf("no kubelet/no runtime: nodefs %+v runtime %q warnings %v", n, l.Runtime, l.Warnings)
	}
}
