package kubeletcfg

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/evictguard/evictguard/internal/hostfs"
)

func TestPodsCgroup(t *testing.T) {
	tests := []struct {
		name string
		c    Cgroups
		want string
	}{
		{"cgroupfs default", Cgroups{Driver: CgroupDriverCgroupfs, Root: "/", PerQOS: true}, "/kubepods"},
		{"systemd default (kubeadm)", Cgroups{Driver: CgroupDriverSystemd, Root: "/", PerQOS: true}, "/kubepods.slice"},
		{"cgroupfs nested root", Cgroups{Driver: CgroupDriverCgroupfs, Root: "/node/k8s", PerQOS: true}, "/node/k8s/kubepods"},
		{"systemd root with a dash", Cgroups{Driver: CgroupDriverSystemd, Root: "/kube-root", PerQOS: true}, "/kube_root.slice/kube_root-kubepods.slice"},
		{"systemd two components", Cgroups{Driver: CgroupDriverSystemd, Root: "/a/b", PerQOS: true}, "/a.slice/a-b.slice/a-b-kubepods.slice"},
		{"no QoS cgroups", Cgroups{Driver: CgroupDriverCgroupfs, Root: "", PerQOS: false}, "/"},
		{"no QoS cgroups, systemd", Cgroups{Driver: CgroupDriverSystemd, Root: "/", PerQOS: false}, "/"},
		{"no QoS cgroups under a root", Cgroups{Driver: CgroupDriverCgroupfs, Root: "/pods", PerQOS: false}, "/pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.PodsCgroup(); got != tt.want {
				t.Errorf("%+v.PodsCgroup() = %q, want %q", tt.c, got, tt.want)
			}
		})
	}
}

// TestDiscoverCgroups: the cgroup settings follow the kubelet's precedence — defaults, the
// config file, --config-dir drop-ins, then flags.
func TestDiscoverCgroups(t *testing.T) {
	tests := []struct {
		name    string
		config  string // written to /etc/kubelet/config.yaml when not empty
		dropIn  string // written to /etc/kubelet/conf.d/10.conf when not empty
		cmdline []string
		want    Cgroups
	}{{
		name:    "flags only: the kubelet's defaults",
		cmdline: []string{"--root-dir=/var/lib/kubelet"},
		want:    Cgroups{Driver: "cgroupfs", Root: "/", PerQOS: true},
	}, {
		name:    "config file (kubeadm's systemd driver)",
		config:  "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n",
		cmdline: []string{"--config=/etc/kubelet/config.yaml"},
		want:    Cgroups{Driver: "systemd", Root: "/", PerQOS: true},
	}, {
		name:    "a drop-in wins over the file",
		config:  "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\ncgroupRoot: /a\n",
		dropIn:  "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n",
		cmdline: []string{"--config=/etc/kubelet/config.yaml", "--config-dir=/etc/kubelet/conf.d"},
		want:    Cgroups{Driver: "cgroupfs", Root: "/a", PerQOS: true},
	}, {
		name:    "flags win over the file",
		config:  "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\ncgroupsPerQOS: true\n",
		cmdline: []string{"--config=/etc/kubelet/config.yaml", "--cgroup-driver=cgroupfs", "--cgroup-root", "/k8s", "--cgroups-per-qos=false"},
		want:    Cgroups{Driver: "cgroupfs", Root: "/k8s", PerQOS: false},
	}, {
		name:    "cgroupsPerQOS false in the file, no root",
		config:  "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupsPerQOS: false\n",
		cmdline: []string{"--config=/etc/kubelet/config.yaml"},
		want:    Cgroups{Driver: "cgroupfs", Root: "", PerQOS: false},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			write := func(p, content string) {
				t.Helper()
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.config != "" {
				write("/etc/kubelet/config.yaml", tt.config)
			}
			if tt.dropIn != "" {
				write("/etc/kubelet/conf.d/10.conf", tt.dropIn)
			}
			eff, err := Discover(context.Background(), Options{HostRoot: hostfs.Root(root), Cmdline: tt.cmdline, Version: "1.37"})
			if err != nil {
				t.Fatal(err)
			}
			if eff.Cgroups != tt.want {
				t.Errorf("Cgroups = %+v, want %+v", eff.Cgroups, tt.want)
			}
		})
	}
}
