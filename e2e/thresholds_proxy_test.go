package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestThresholdsConfigzThroughAPIServer: `evictguard thresholds --configz apiserver` reads a real
// kubelet's /configz through a real kube-apiserver (GET /api/v1/nodes/NODE/proxy/configz) and
// computes exactly what the kubelet reports, for a non-default configuration; a difference is
// found through the proxy too. It also settles the RBAC question with the real authorizer:
// the DaemonSet's ServiceAccount (deploy/kubernetes RBAC, remediation overlay included) holds
// get nodes/configz, which the API server does not consult for the proxy — it refuses with
// "cannot get resource nodes/proxy" — and an identity with get nodes/proxy succeeds.
//
// The API server proxies only to global unicast node addresses (isProxyableHostname in
// k/k@v1.37.2:pkg/registry/core/node/strategy.go refuses loopback), so the kubelet serves on an
// extra 198.18.0.0/15 (benchmarking range) address on lo and is registered under it. That
// kubelet has anonymous auth and AlwaysAllow, as every harness kubelet: the API server's
// connection to it needs no client certificate here.
func TestThresholdsConfigzThroughAPIServer(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	addr := loopbackAlias(t)
	a := harness.StartAPIServer(t)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, APIServer: a, NodeName: addr, Address: addr,
		ConfigExtra: "evictionHard:\n  memory.available: 250Mi\n  nodefs.available: \"7%\"\n  imagefs.available: 2Gi\n" +
			"evictionSoft:\n  nodefs.available: \"12%\"\nevictionSoftGracePeriod:\n  nodefs.available: 45s\n" +
			"evictionMinimumReclaim:\n  nodefs.available: 300Mi\n"})
	waitKubeletEndpoint(t, a, addr, k.Port)
	wantHard := map[string]string{"memory.available": "250Mi", "nodefs.available": "7%", "imagefs.available": "2Gi"}
	cmdline := strings.Join(k.Args[1:], " ")
	proxy := []string{"--configz", "apiserver", "--node-name", addr}
	wantSource := fmt.Sprintf("configz (apiserver proxy %s/api/v1/nodes/%s/proxy/configz)", a.URL, addr)

	run := func(t *testing.T, kubeconfig string, extra ...string) (thresholdsProxyDoc, string, int) {
		t.Helper()
		args := append([]string{"thresholds", "-o", "json", "--kubeconfig", kubeconfig}, proxy...)
		stdout, stderr, code := runEvictguard(t, append(args, extra...)...)
		var d thresholdsProxyDoc
		if stdout != "" {
			if err := json.Unmarshal([]byte(stdout), &d); err != nil {
				t.Fatalf("thresholds JSON: %v\n%s", err, stdout)
			}
		}
		return d, stderr, code
	}

	t.Run("operator kubeconfig: equal to /configz", func(t *testing.T) {
		// The full comparison with the kubelet's own /configz (the later --configz wins).
		assertMatchesConfigz(t, k, wantHard, map[string]string{"nodefs.available/soft": "config.yaml:"}, "",
			append([]string{"--kubelet-cmdline", cmdline, "--kubeconfig", a.Kubeconfig}, proxy...)...)
		d, stderr, code := run(t, a.Kubeconfig, "--kubelet-cmdline", cmdline)
		if code != 0 || d.ConfigzSource != wantSource || !containsAny(d.Sources, wantSource) {
			t.Errorf("exit %d, configzSource %q, sources %q; want 0 and %q\nstderr: %s", code, d.ConfigzSource, d.Sources, wantSource, stderr)
		}
	})

	t.Run("a difference is found through the proxy", func(t *testing.T) {
		d, stderr, code := run(t, a.Kubeconfig, "--kubelet-cmdline", strings.ReplaceAll(cmdline, "--config=", "--eviction-hard=nodefs.available<9% --config="))
		want := `evictionHard[nodefs.available]: computed "9%" (flag --eviction-hard in --kubelet-cmdline) but configz has "7%"`
		if code != 1 || !containsAny(d.Mismatches, want) {
			t.Errorf("exit %d, mismatches %q; want 1 and %q\nstderr: %s", code, d.Mismatches, want, stderr)
		}
	})

	// The DaemonSet's identity, with the RBAC as shipped.
	applyManifest(t, a.Client, "../deploy/kubernetes/rbac.yaml")
	applyManifest(t, a.Client, "../deploy/kubernetes/overlays/remediation/rbac.yaml")
	daemonKubeconfig, daemon := serviceAccountKubeconfig(t, a, "evictguard")
	// A reader with exactly get nodes/proxy.
	if _, err := a.Client.CoreV1().ServiceAccounts("evictguard").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "configz-reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "configz-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes/proxy"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "configz-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "configz-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "configz-reader", Namespace: "evictguard"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readerKubeconfig, _ := serviceAccountKubeconfig(t, a, "configz-reader")

	t.Run("the DaemonSet's nodes/configz does not open the proxy", func(t *testing.T) {
		for sub, want := range map[string]bool{"configz": true, "proxy": false} {
			if got := canGetNode(t, daemon, addr, sub); got != want {
				t.Errorf("ServiceAccount evictguard: get nodes/%s allowed = %v, want %v (deploy/kubernetes RBAC)", sub, got, want)
			}
		}
		_, stderr, code := run(t, daemonKubeconfig, "--kubelet-cmdline", cmdline)
		for _, sub := range []string{`cannot get resource "nodes/proxy"`, "needs get on nodes/proxy"} {
			if code != 1 || !strings.Contains(stderr, sub) {
				t.Errorf("exit %d, stderr lacks %q:\n%s", code, sub, stderr)
			}
		}
	})

	t.Run("get nodes/proxy is what it takes", func(t *testing.T) {
		d, stderr, code := run(t, readerKubeconfig, "--kubelet-cmdline", cmdline)
		if code != 0 || len(d.Mismatches) > 0 || d.ConfigzSource != wantSource {
			t.Errorf("exit %d, mismatches %q, configzSource %q\nstderr: %s", code, d.Mismatches, d.ConfigzSource, stderr)
		}
	})
}

// thresholdsProxyDoc is the thresholds JSON with the fields this test reads beyond thresholdsDoc.
type thresholdsProxyDoc struct {
	thresholdsDoc
	Sources       []string `json:"sources"`
	ConfigzSource string   `json:"configzSource"`
}

// loopbackAlias adds a 198.18.0.0/15 address (RFC 2544 benchmarking, global unicast to the
// API server) to lo for the test and removes it afterwards (after the kubelet stopped:
// cleanups run last-in first-out).
func loopbackAlias(t *testing.T) string {
	t.Helper()
	pid := os.Getpid()
	addr := fmt.Sprintf("198.18.%d.%d", (pid>>8)%250+1, pid%250+1)
	if out, err := exec.Command("ip", "addr", "add", addr+"/32", "dev", "lo").CombinedOutput(); err != nil {
		harness.Unavailable(t, "ip addr add %s/32 dev lo: %v: %s", addr, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "addr", "del", addr+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Errorf("ip addr del %s/32 dev lo: %v: %s", addr, err, out)
		}
	})
	return addr
}

// waitKubeletEndpoint waits until the kubelet has registered its Node with the address and
// port the API server will proxy to.
func waitKubeletEndpoint(t *testing.T, a *harness.APIServer, node string, port int) {
	t.Helper()
	err := harness.WaitFor(context.Background(), 90*time.Second, nil, func() error {
		n, err := a.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p := n.Status.DaemonEndpoints.KubeletEndpoint.Port; int(p) != port {
			return fmt.Errorf("node %s: kubelet endpoint port %d, want %d", node, p, port)
		}
		for _, ad := range n.Status.Addresses {
			if ad.Type == corev1.NodeInternalIP && ad.Address == node {
				return nil
			}
		}
		return fmt.Errorf("node %s: addresses %v", node, n.Status.Addresses)
	})
	if err != nil {
		t.Fatalf("the kubelet did not register its Node: %v", err)
	}
}

// serviceAccountKubeconfig writes a kubeconfig with a TokenRequest token of the ServiceAccount
// evictguard/NAME and returns it with a client for that identity.
func serviceAccountKubeconfig(t *testing.T, a *harness.APIServer, name string) (string, kubernetes.Interface) {
	t.Helper()
	tr, err := a.Client.CoreV1().ServiceAccounts("evictguard").CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest %s: %v", name, err)
	}
	path := filepath.Join(harness.TempDir(t, "kubeconfig-"+name), "kubeconfig")
	if err := os.WriteFile(path, []byte(harness.KubeconfigFor(a.URL, tr.Status.Token)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(a.TokenConfig(tr.Status.Token))
	if err != nil {
		t.Fatal(err)
	}
	return path, c
}

// canGetNode asks the API server's authorizer whether the client may get nodes/SUB of node.
func canGetNode(t *testing.T, c kubernetes.Interface, node, sub string) bool {
	t.Helper()
	r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: "get", Resource: "nodes", Subresource: sub, Name: node}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview nodes/%s: %v", sub, err)
	}
	return r.Status.Allowed
}

// TestThresholdsConfigzDirectNodesConfigz is the DaemonSet's way to /configz, proven with the
// kubelet's real authorizer: a kubelet with webhook authentication and authorization (as
// kubeadm sets it) asks the API server about every request. The DaemonSet's ServiceAccount
// with the base RBAC is refused; with the remediation overlay's get nodes/configz the kubelet
// (KubeletFineGrainedAuthz, GA in 1.36) serves /configz, and `evictguard thresholds --configz
// https://127.0.0.1:PORT/configz --configz-token-file` agrees with it.
func TestThresholdsConfigzDirectNodesConfigz(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	a := harness.StartAPIServer(t)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	k := harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: c, APIServer: a,
		ConfigExtra: "evictionHard:\n  memory.available: 300Mi\n  nodefs.available: \"6%\"\n",
		Flags: []string{"--anonymous-auth=false", "--authentication-token-webhook=true", "--authorization-mode=Webhook",
			// the kubelet caches refusals for 30s by default; the test changes RBAC in between
			"--authorization-webhook-cache-unauthorized-ttl=1s"}})
	k.Proc = harness.Start(t, k.Dir, "kubelet", nil, k.Args[0], k.Args[1:]...)
	t.Cleanup(func() {
		if err := harness.UnmountBelow(k.RootDir); err != nil {
			t.Errorf("unmount kubelet root dir: %v", err)
		}
	})
	get := func(token string) (int, string, error) {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback kubelet with a self-signed cert
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.ConfigzURL(), nil)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	// Ready: /configz answers the admin (system:masters) through the webhook.
	err := harness.WaitFor(ctx, 90*time.Second, k.Proc, func() error {
		code, body, err := get(a.AdminToken)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.Contains(body, `"nodefs.available":"6%"`) {
			return fmt.Errorf("/configz as admin: %d %s", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("kubelet: %v\n%s", err, k.Proc.LogTail(3000))
	}
	if code, _, err := get(""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("anonymous /configz: %d %v, want 401 (the kubelet must authenticate)", code, err)
	}

	applyManifest(t, a.Client, "../deploy/kubernetes/rbac.yaml")
	tokenFile := filepath.Join(harness.TempDir(t, "sa-token"), "token")
	tr, err := a.Client.CoreV1().ServiceAccounts("evictguard").CreateToken(ctx, "evictguard",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"thresholds", "-o", "json", "--kubelet-cmdline", strings.Join(k.Args, " "),
		"--configz", k.ConfigzURL(), "--configz-token-file", tokenFile}

	t.Run("base RBAC: the kubelet refuses", func(t *testing.T) {
		code, body, err := get(tr.Status.Token)
		// The kubelet checks nodes/configz, then falls back to nodes/proxy.
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "subresource(s)=[configz proxy]") {
			t.Errorf("/configz as the base ServiceAccount: %d %q %v, want 403 naming subresources configz and proxy", code, body, err)
		}
		stdout, stderr, code := runEvictguard(t, args...)
		if code != 1 || !strings.Contains(stderr, "403") {
			t.Errorf("exit %d, want 1 with the kubelet's 403\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})

	t.Run("remediation overlay RBAC (get nodes/configz): served and equal", func(t *testing.T) {
		applyManifest(t, a.Client, "../deploy/kubernetes/overlays/remediation/rbac.yaml")
		err := harness.WaitFor(ctx, 60*time.Second, k.Proc, func() error {
			code, body, err := get(tr.Status.Token)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("/configz as the ServiceAccount: %d %s", code, body)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := runEvictguard(t, args...)
		var d thresholdsProxyDoc
		if err := json.Unmarshal([]byte(stdout), &d); err != nil {
			t.Fatalf("exit %d: %v\n%s\n%s", code, err, stdout, stderr)
		}
		if code != 0 || len(d.Mismatches) > 0 || d.ConfigzSource != "configz "+k.ConfigzURL() {
			t.Errorf("exit %d, mismatches %q, configzSource %q\nstderr: %s", code, d.Mismatches, d.ConfigzSource, stderr)
		}
		hard := map[string]string{}
		for _, th := range d.Thresholds {
			if th.Kind == "hard" && th.Signal != "allocatableMemory.available" {
				hard[th.Signal] = th.Value
			}
		}
		if want := map[string]string{"memory.available": "300Mi", "nodefs.available": "6%"}; fmt.Sprint(hard) != fmt.Sprint(want) {
			t.Errorf("hard thresholds %v, want %v", hard, want)
		}
	})
}
