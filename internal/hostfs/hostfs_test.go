package hostfs

import "testing"

func TestPath(t *testing.T) {
	tests := []struct {
		root, in, want string
	}{
		{"/", "/var/lib/kubelet", "/var/lib/kubelet"},
		{"", "var/lib/kubelet", "/var/lib/kubelet"},
		{"/host", "/etc/docker/daemon.json", "/host/etc/docker/daemon.json"},
		{"/host", "/../../etc/passwd", "/host/etc/passwd"},
		{"testdata/tree", "/etc/default/kubelet", "testdata/tree/etc/default/kubelet"},
	}
	for _, tt := range tests {
		t.Run(tt.root+tt.in, func(t *testing.T) {
			if got := Root(tt.root).Path(tt.in); got != tt.want {
				t.Errorf("Root(%q).Path(%q) = %q, want %q", tt.root, tt.in, got, tt.want)
			}
		})
	}
}

func TestNodePath(t *testing.T) {
	tests := []struct {
		root, in, want string
	}{
		{"/", "/var/lib/kubelet", "/var/lib/kubelet"},
		{"/host", "/host/var/lib/kubelet", "/var/lib/kubelet"},
		{"/host", "/host", "/"},
		{"/host", "/hostile/x", "/hostile/x"},
	}
	for _, tt := range tests {
		t.Run(tt.root+tt.in, func(t *testing.T) {
			if got := Root(tt.root).NodePath(tt.in); got != tt.want {
				t.Errorf("Root(%q).NodePath(%q) = %q, want %q", tt.root, tt.in, got, tt.want)
			}
		})
	}
}
