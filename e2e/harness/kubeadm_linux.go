package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// KubeletUnit is a real kubelet run as kubelet.service by a sandboxed systemd manager, with a
// host-root directory through which evictguard sees the unit files as
// /etc/systemd/system/kubelet.service{,.d/} (the sandbox's UnitDir) and the real /tmp, /var and
// /proc.
type KubeletUnit struct {
	*Kubelet
	// Log is the file the unit's stdout and stderr are appended to.
	Log      string
	SD       *Systemd
	Conn     *sddbus.Conn
	HostRoot string
}

// StartKubeletUnit writes kubelet.service (ExecStart=binary, Restart=always, RestartSec=1) and
// the given drop-ins (name → content) into the sandbox, starts the unit over D-Bus and waits
// for /configz. The sandbox (and any tmpfs the kubelet's root dir is on) must have been set up
// by the caller; TmpFS mounts must exist before StartSystemd, whose mount namespace copies them.
func StartKubeletUnit(t testing.TB, sd *Systemd, k *Kubelet, dropIns map[string]string) *KubeletUnit {
	t.Helper()
	logFile := filepath.Join(k.Dir, "kubelet.service.log")
	sd.WriteUnit(t, "kubelet.service", "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\nStartLimitIntervalSec=0\n\n[Service]\nExecStart="+k.Binary+
		"\nRestart=always\nRestartSec=1\nStandardOutput=append:"+logFile+"\nStandardError=inherit\n")
	for name, c := range dropIns {
		sd.WriteDropIn(t, "kubelet.service", name, c)
	}
	u := &KubeletUnit{Kubelet: k, SD: sd, Conn: sd.Conn(t), Log: logFile}
	ctx := context.Background()
	if err := u.Conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	if _, err := u.Conn.StartUnitContext(ctx, "kubelet.service", "replace", done); err != nil {
		t.Fatalf("start kubelet.service: %v", err)
	}
	if r := <-done; r != "done" {
		t.Fatalf("start kubelet.service: job %s", r)
	}
	t.Cleanup(func() {
		stopped := make(chan string, 1)
		if _, err := u.Conn.StopUnitContext(context.Background(), "kubelet.service", "replace", stopped); err == nil {
			select {
			case <-stopped:
			case <-time.After(30 * time.Second):
			}
		}
		if err := UnmountBelow(k.RootDir); err != nil {
			t.Errorf("unmount kubelet root: %v", err)
		}
	})
	if err := WaitFor(ctx, 90*time.Second, nil, func() error { _, err := k.ConfigzRaw(); return err }); err != nil {
		t.Fatalf("kubelet.service never served /configz: %v", err)
	}
	u.HostRoot = TempDir(t, "hostroot")
	for link, target := range map[string]string{"etc/systemd/system": sd.UnitDir, "tmp": "/tmp", "var": "/var", "proc": "/proc"} {
		p := filepath.Join(u.HostRoot, link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// LogText returns the unit's log from byte offset from on.
func (u *KubeletUnit) LogText(from int64) string {
	b, err := os.ReadFile(u.Log)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	return string(b[from:])
}

// LogSize is the current size of the unit's log.
func (u *KubeletUnit) LogSize() int64 {
	fi, err := os.Stat(u.Log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// DropInPath is the host path of a drop-in of kubelet.service in the sandbox.
func (u *KubeletUnit) DropInPath(name string) string {
	return filepath.Join(u.SD.UnitDir, "kubelet.service.d", name)
}
