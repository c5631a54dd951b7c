package migration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestFindPins mounts, for real, each way a running container keeps a data root in use — a
// filesystem below it, a bind mount of a directory inside it, an overlay with its layers in
// it, a bind mount made in another mount namespace — and a view of the root itself, which is
// not a pin. Then removeTree must refuse to cross the mount below the root.
func TestFindPins(t *testing.T) {
	harness.RequireRoot(t)
	fs := harness.TmpFS(t, 32<<20, 0)
	root := filepath.Join(fs, "docker")
	for _, d := range []string{"sub", "vol", "lower", "upper", "work", "mnt"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "sub", "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere := harness.TempDir(t, "pins")
	mountAt := func(name, src, fstype string, flags uintptr, data string) string {
		t.Helper()
		dst := filepath.Join(elsewhere, name)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
			t.Fatalf("mount %s on %s: %v", src, dst, err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
		return dst
	}
	pins := func() []Pin {
		t.Helper()
		p, err := FindPins("/", root)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	expect := func(t *testing.T, mountpoint, why string) {
		t.Helper()
		for _, p := range pins() {
			if p.Mountpoint == mountpoint && strings.Contains(p.Why, why) {
				return
			}
		}
		t.Errorf("no pin at %s (%q); pins: %v", mountpoint, why, pins())
	}

	t.Run("a view of the root itself is not a pin", func(t *testing.T) {
		mountAt("view", root, "", unix.MS_BIND, "")
		if p := pins(); len(p) != 0 {
			t.Errorf("pins of an idle root: %v", p)
		}
	})
	t.Run("a bind mount of a directory inside", func(t *testing.T) {
		dst := mountAt("volume", filepath.Join(root, "vol"), "", unix.MS_BIND, "")
		expect(t, dst, "a bind mount of "+filepath.Join(root, "vol"))
	})
	t.Run("an overlay with its layers inside", func(t *testing.T) {
		dst := mountAt("merged", "overlay", "overlay", 0, "lowerdir="+filepath.Join(root, "lower")+",upperdir="+filepath.Join(root, "upper")+",workdir="+filepath.Join(root, "work"))
		expect(t, dst, "an overlay whose lowerdir is in "+root)
	})
	t.Run("a filesystem mounted below", func(t *testing.T) {
		dst := filepath.Join(root, "mnt")
		if err := unix.Mount("tmpfs", dst, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
		expect(t, dst, "mounted below "+root)
		// removeTree stops at the mount point instead of descending into it.
		if err := os.WriteFile(filepath.Join(dst, "running"), []byte("in use"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := removeTree(root)
		if err == nil || !strings.Contains(err.Error(), "refusing to remove across it") {
			t.Errorf("removeTree across a mount point: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dst, "running")); err != nil {
			t.Errorf("removeTree deleted a file on the mounted filesystem: %v", err)
		}
		if err := unix.Unmount(dst, 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a bind mount in another mount namespace", func(t *testing.T) {
		target := filepath.Join(elsewhere, "ns-target")
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
			"mount --bind "+filepath.Join(root, "sub")+" "+target+" && echo ready && exec sleep 300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		line, _ := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("unshare: %q", line)
		}
		var found *Pin
		for _, p := range pins() {
			if p.Mountpoint == target {
				found = &p
			}
		}
		// The shell execs sleep right after it prints "ready": either name is the process.
		if found == nil || found.PID != cmd.Process.Pid || (found.Comm != "sleep" && found.Comm != "sh") {
			t.Fatalf("the other namespace's bind mount: %+v; pins: %v", found, pins())
		}
		t.Logf("found: %s", found)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			gone := true
			for _, p := range pins() {
				if p.Mountpoint == target {
					gone = false
				}
			}
			if gone {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("the pin outlived the namespace")
	})
}
