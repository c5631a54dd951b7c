package hostexec

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/evictguard/evictguard/internal/hostfs"
)

func TestView(t *testing.T) {
	tests := []struct {
		name                   string
		view                   View
		inContainer            bool
		unitRoot, bus, unitBus string
		hostPath, wantHostPath string
	}{
		{name: "on the node", view: View{Root: "/"}, unitRoot: "/", bus: "", unitBus: "",
			hostPath: "/run/containerd/containerd.sock", wantHostPath: "/run/containerd/containerd.sock"},
		{name: "DaemonSet, default bus", view: View{Root: "/host"}, inContainer: true, unitRoot: "/",
			bus: "unix:path=/host/run/dbus/system_bus_socket", unitBus: "unix:path=/run/dbus/system_bus_socket",
			hostPath: "/host/run/containerd/containerd.sock", wantHostPath: "/run/containerd/containerd.sock"},
		{name: "container, bus given under the root", view: View{Root: "/host/", Bus: "unix:path=/host/tmp/sd/bus"}, inContainer: true,
			unitRoot: "/", bus: "unix:path=/host/tmp/sd/bus", unitBus: "unix:path=/tmp/sd/bus",
			hostPath: "/host/var/run/docker.sock", wantHostPath: "/var/run/docker.sock"},
		{name: "fixture tree on the node", view: View{Root: "/tmp/fixture", Bus: "unix:path=/tmp/sd/bus"}, unitRoot: "/tmp/fixture",
			bus: "unix:path=/tmp/sd/bus", unitBus: "unix:path=/tmp/sd/bus",
			hostPath: "/tmp/docker.sock", wantHostPath: "/tmp/docker.sock"},
		{name: "a root that only prefixes the bus path", view: View{Root: "/ho", Bus: "unix:path=/host/bus"}, unitRoot: "/ho",
			bus: "unix:path=/host/bus", unitBus: "unix:path=/host/bus", hostPath: "/x", wantHostPath: "/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.view.InContainer(); got != tc.inContainer {
				t.Errorf("InContainer = %t", got)
			}
			if got := tc.view.UnitRoot(); got != hostfs.Root(tc.unitRoot) {
				t.Errorf("UnitRoot = %q, want %q", got, tc.unitRoot)
			}
			if got := tc.view.BusAddress(); got != tc.bus {
				t.Errorf("BusAddress = %q, want %q", got, tc.bus)
			}
			if got := tc.view.UnitBusAddress(); got != tc.unitBus {
				t.Errorf("UnitBusAddress = %q, want %q", got, tc.unitBus)
			}
			if got := tc.view.HostPath(tc.hostPath); got != tc.wantHostPath {
				t.Errorf("HostPath(%s) = %q, want %q", tc.hostPath, got, tc.wantHostPath)
			}
		})
	}
}

// TestStage: the copy is named by its digest, reused when intact, replaced when not, and
// executable.
func TestStage(t *testing.T) {
	root := t.TempDir()
	exe := filepath.Join(t.TempDir(), "evictguard")
	if err := os.WriteFile(exe, []byte("#!/bin/true\nversion 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := &Host{Root: hostfs.Root(root), StateDir: "/var/lib/evictguard", Executable: exe}
	node, err := h.Stage()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(node) != "/var/lib/evictguard/bin" || len(filepath.Base(node)) != len("evictguard-")+16 {
		t.Fatalf("staged at %s", node)
	}
	path := filepath.Join(root, node)
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("staged copy: %v %v", st, err)
	}
	// Reused as it is.
	if again, err := h.Stage(); err != nil || again != node {
		t.Fatalf("second stage: %s %v", again, err)
	}
	// A corrupted copy is replaced.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if again, err := h.Stage(); err != nil || again != node {
		t.Fatalf("stage over a corrupt copy: %s %v", again, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "#!/bin/true\nversion 1\n" {
		t.Errorf("content after re-staging: %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o755 {
		t.Errorf("mode after re-staging: %v", st.Mode())
	}
	// Another binary gets another name.
	if err := os.WriteFile(exe, []byte("#!/bin/true\nversion 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	other, err := h.Stage()
	if err != nil || other == node {
		t.Errorf("a new binary staged at %s (%v), the old at %s", other, err, node)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "/var/lib/evictguard/bin/*")); len(left) != 1 || left[0] != filepath.Join(root, other) {
		t.Errorf("staged copies after an upgrade: %v, want only %s", left, other)
	}
}

// TestLendCredentials: the kubeconfig the unit reads has the server, the CA inline and a token
// file under the operation's directory; Refresh follows a rotated token; Revoke removes both.
func TestLendCredentials(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	ca, tok := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tok, []byte("token-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &Host{Root: hostfs.Root(root), Bus: "unix:path=/run/sandbox/bus", StateDir: "/state"}
	cfg := &rest.Config{Host: "https://10.96.0.1:443", BearerTokenFile: tok, TLSClientConfig: rest.TLSClientConfig{CAFile: ca}}
	c, err := h.LendCredentials("op1", cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Root is a fixture tree (no bus under it): the unit reads the same paths.
	if c.Kubeconfig != filepath.Join(root, "/state/ops/op1/kubeconfig") {
		t.Fatalf("kubeconfig at %s", c.Kubeconfig)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := kc.Contexts[kc.CurrentContext]
	cl, ai := kc.Clusters[ctx.Cluster], kc.AuthInfos[ctx.AuthInfo]
	if cl.Server != cfg.Host || string(cl.CertificateAuthorityData) == "" || ai.TokenFile != filepath.Join(root, "/state/ops/op1/token") {
		t.Fatalf("kubeconfig: server %s, CA %d bytes, token file %s", cl.Server, len(cl.CertificateAuthorityData), ai.TokenFile)
	}
	if st, _ := os.Stat(c.Kubeconfig); st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v", st.Mode())
	}
	if b, _ := os.ReadFile(ai.TokenFile); string(b) != "token-1" {
		t.Errorf("lent token %q", b)
	}
	if err := os.WriteFile(tok, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ai.TokenFile); string(b) != "token-2" {
		t.Errorf("refreshed token %q", b)
	}
	c.Revoke()
	for _, f := range []string{c.Kubeconfig, ai.TokenFile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s after Revoke: %v", f, err)
		}
	}
	if _, err := h.LendCredentials("op2", &rest.Config{Host: "https://x", ExecProvider: &clientcmdapi.ExecConfig{Command: "gke-gcloud-auth-plugin"}}); err == nil {
		t.Error("an exec plugin was lent")
	}
}
