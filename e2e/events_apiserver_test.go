package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/evictguard/evictguard/e2e/harness"
)

// startAPIServer is harness.StartAPIServer plus --endpoint-reconciler-type=none: the pinned
// kube-apiserver refuses a loopback --advertise-address with the default lease reconciler
// ("cannot use public IP 127.0.0.1 with endpoint reconciler"), which makes
// harness.StartAPIServer fail. Replace with harness.StartAPIServer once the harness passes
// the flag.
func startAPIServer(t *testing.T) *harness.APIServer {
	t.Helper()
	harness.RequireRoot(t)
	bin := harness.K8sBinary(t, "kube-apiserver")
	etcd := harness.StartEtcd(t)
	dir := harness.TempDir(t, "apiserver")
	port := harness.FreePort(t)
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	a := &harness.APIServer{Dir: dir, URL: fmt.Sprintf("https://127.0.0.1:%d", port), AdminToken: hex.EncodeToString(tok), Etcd: etcd}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"tokens.csv": []byte(a.AdminToken + ",admin,admin-uid,\"system:masters\"\n"),
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a.Proc = harness.Start(t, dir, "kube-apiserver", nil, bin,
		"--etcd-servers", etcd.ClientURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--endpoint-reconciler-type", "none",
		"--secure-port", fmt.Sprint(port), "--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "Node,RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		"--profiling=false", "--v=1")
	a.Config = &rest.Config{Host: a.URL, BearerToken: a.AdminToken, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 50, Burst: 100}
	if a.Client, err = kubernetes.NewForConfig(a.Config); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback test server with a self-signed cert
	err = harness.WaitFor(context.Background(), 120*time.Second, a.Proc, func() error {
		req, _ := http.NewRequest(http.MethodGet, a.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("kube-apiserver did not become ready: %v", err)
	}
	a.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(a.Kubeconfig, []byte(harness.KubeconfigFor(a.URL, a.AdminToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}
