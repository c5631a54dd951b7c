package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Etcd is a single-member etcd on loopback.
type Etcd struct {
	Dir       string
	ClientURL string
	Proc      *Process
}

// StartEtcd starts Debian's etcd on free loopback ports and waits for /health.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	RequireRoot(t)
	bin := Binary(t, "etcd", "etcd-server")
	dir := TempDir(t, "etcd")
	client := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	e := &Etcd{Dir: dir, ClientURL: client}
	e.Proc = Start(t, dir, "etcd", []string{"ETCD_UNSUPPORTED_ARCH=" + goarch()}, bin,
		"--name", "default", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer, "--log-level", "warn")
	err := WaitFor(context.Background(), 30*time.Second, e.Proc, func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("etcd did not become ready: %v", err)
	}
	return e
}

// APIServer is a kube-apiserver on loopback backed by an Etcd.
type APIServer struct {
	Dir        string
	URL        string // https://127.0.0.1:PORT
	AdminToken string
	// Kubeconfig is an admin kubeconfig file for this server.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	Etcd       *Etcd
	Proc       *Process
	// AuditLog is the audit log (JSON lines, one event per finished request) when
	// APIServerOptions.Audit is set.
	AuditLog string

	bin  string
	args []string
}

// APIServerOptions tunes StartAPIServerWith.
type APIServerOptions struct {
	// Address is a node address to serve on ("": loopback); see StartAPIServerOn.
	Address string
	// Audit logs every request's metadata (user, user agent, verb, resource, code) once it
	// finished, so a test can count what each identity costs the server.
	Audit bool
}

// StartAPIServer starts etcd and the pinned kube-apiserver with token auth, RBAC and a
// service-account key pair on loopback, and waits for /readyz.
func StartAPIServer(t testing.TB) *APIServer {
	t.Helper()
	return StartAPIServerOn(t, "")
}

// StartAPIServerOn is StartAPIServer serving on address (a node address that pods reach),
// or on loopback when address is "". On a node address the server keeps the endpoints of
// Service default/kubernetes (the lease reconciler, as in a cluster), so that pods reach it
// at the Service's cluster IP 10.96.0.1 through kube-proxy, with the in-cluster config.
func StartAPIServerOn(t testing.TB, address string) *APIServer {
	t.Helper()
	return StartAPIServerWith(t, APIServerOptions{Address: address})
}

// StartAPIServerWith is StartAPIServer with options.
func StartAPIServerWith(t testing.TB, opts APIServerOptions) *APIServer {
	t.Helper()
	address := opts.Address
	RequireRoot(t)
	bin := K8sBinary(t, "kube-apiserver")
	etcd := StartEtcd(t)
	dir := TempDir(t, "apiserver")
	port := FreePort(t)
	reconciler := []string{"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		// 1.37 refuses a loopback advertise address with the default lease reconciler
		// ("cannot use public IP 127.0.0.1 with endpoint reconciler"); a one-node test server
		// needs no kubernetes.default endpoints.
		"--endpoint-reconciler-type", "none"}
	host := "127.0.0.1"
	if address != "" {
		host = address
		reconciler = []string{"--bind-address", address, "--advertise-address", address}
	}
	a := &APIServer{Dir: dir, URL: fmt.Sprintf("https://%s:%d", host, port), AdminToken: randomToken(t), Etcd: etcd}
	tokens := fmt.Sprintf("%s,admin,admin-uid,\"system:masters\"\n", a.AdminToken)
	mustWrite(t, filepath.Join(dir, "tokens.csv"), tokens, 0o600)
	key, pub := rsaKeyPair(t)
	mustWrite(t, filepath.Join(dir, "sa.key"), key, 0o600)
	mustWrite(t, filepath.Join(dir, "sa.pub"), pub, 0o644)
	a.bin, a.args = bin, append(reconciler,
		"--etcd-servers", etcd.ClientURL,
		// As kubeadm sets it: the remediation DaemonSet is privileged.
		"--allow-privileged=true",
		"--secure-port", fmt.Sprint(port), "--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "Node,RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		"--profiling=false", "--v=1")
	if opts.Audit {
		policy := filepath.Join(dir, "audit-policy.yaml")
		mustWrite(t, policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n", 0o644)
		a.AuditLog = filepath.Join(dir, "audit.log")
		a.args = append(a.args, "--audit-policy-file", policy, "--audit-log-path", a.AuditLog, "--audit-log-maxsize", "0")
	}
	a.Proc = Start(t, dir, "kube-apiserver", nil, a.bin, a.args...)
	a.Config = &rest.Config{Host: a.URL, BearerToken: a.AdminToken, TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS: 50, Burst: 100}
	var err error
	a.Client, err = kubernetes.NewForConfig(a.Config)
	if err != nil {
		t.Fatalf("client for apiserver: %v", err)
	}
	if err := a.waitReady(); err != nil {
		t.Fatalf("kube-apiserver did not become ready: %v", err)
	}
	a.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	mustWrite(t, a.Kubeconfig, KubeconfigFor(a.URL, a.AdminToken), 0o600)
	return a
}

// waitReady waits for /readyz.
func (a *APIServer) waitReady() error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback test server with a self-signed cert
	err := WaitFor(context.Background(), 120*time.Second, a.Proc, func() error {
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
	return err
}

// Stop stops the API server (etcd keeps running), as an outage the clients must ride out.
func (a *APIServer) Stop() error { return a.Proc.Stop(15 * time.Second) }

// Start starts a stopped API server again with the same flags, port and etcd, and waits
// for /readyz.
func (a *APIServer) Start(t testing.TB) {
	t.Helper()
	a.Proc = Start(t, a.Dir, "kube-apiserver", nil, a.bin, a.args...)
	if err := a.waitReady(); err != nil {
		t.Fatalf("kube-apiserver did not become ready again: %v", err)
	}
}

// KubeconfigFor renders a token kubeconfig for a server with a self-signed certificate.
func KubeconfigFor(server, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: harness
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: harness
  user:
    token: %s
contexts:
- name: harness
  context:
    cluster: harness
    user: harness
current-context: harness
`, server, token)
}

// AddToken restarts nothing: token files are read once, so extra identities must be added
// before start. TokenFor returns a client config for an arbitrary bearer token instead.
func (a *APIServer) TokenConfig(token string) *rest.Config {
	return &rest.Config{Host: a.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
}

func randomToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

func rsaKeyPair(t testing.TB) (private, public string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
}

func mustWrite(t testing.TB, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}
