package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/deploy"
	"github.com/evictguard/evictguard/e2e/harness"
)

// TestMetricsAuthAgainstAPIServer runs `evictguard run` with the remediation overlay's
// metrics settings (metrics.auth: kubernetes) as the overlay's ServiceAccount, with the
// overlay's RBAC applied to a real kube-apiserver, and scrapes it as the kubelet's probes
// and as Prometheus would: no token → 401, a token whose user may not get /metrics → 403,
// the token of a Prometheus ServiceAccount bound to evictguard-metrics-reader → 200; /healthz
// and /readyz need no token. Scrapes every second cost the API server no review after the
// first (the answers are cached), and a real Prometheus scrapes it over HTTPS with its token.
func TestMetricsAuthAgainstAPIServer(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	ctx := t.Context()
	a := harness.StartAPIServer(t)
	ap := newApplier(t, a)
	objs, err := deploy.Kustomize("../deploy/kubernetes/overlays/remediation")
	if err != nil {
		t.Fatal(err)
	}
	var auth string
	for _, o := range ap.applyIdentity(t, objs) {
		if o["kind"] == "ConfigMap" {
			cfg, _ := o["data"].(map[string]any)["config.yaml"].(string)
			if strings.Contains(cfg, "auth: kubernetes") {
				auth = "kubernetes"
			}
		}
	}
	if auth != "kubernetes" {
		t.Fatal("the remediation overlay's config does not set metrics.auth: kubernetes")
	}
	// Prometheus' ServiceAccount, bound as docs/install.md#metrics-authentication says; another ServiceAccount without it.
	for _, ns := range []string{"monitoring"} {
		if _, err := a.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sa := range []string{"prometheus", "nobody"} {
		if _, err := a.Client.CoreV1().ServiceAccounts("monitoring").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-evictguard-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "evictguard-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "monitoring"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(ns, sa string) string {
		tr, err := a.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	dir := harness.TempDir(t, "metrics-auth")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(harness.KubeconfigFor(a.URL, token("evictguard", "evictguard"))), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := newFillScenario(t, time.Hour, 1)
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	p := harness.Start(t, dir, "evictguard", nil, evictguardBinary(t), sc.Args(listen, "--metrics-auth", "kubernetes", "--kubeconfig", kubeconfig, "--node-name", "n1")...)

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the daemon's self-signed certificate
	get := func(path, token string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+listen+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	err = harness.WaitFor(ctx, 30*time.Second, p, func() error {
		code, body, err := get("/readyz", "")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, p.LogTail(3000))
	}
	prometheus, nobody := token("monitoring", "prometheus"), token("monitoring", "nobody")
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"probe, no token", "/healthz", "", 200},
		{"readiness probe, no token", "/readyz", "", 200},
		{"no token", "/metrics", "", 401},
		{"a token the API server does not know", "/metrics", "not-a-token", 401},
		{"a ServiceAccount without the permission", "/metrics", nobody, 403},
		{"Prometheus' ServiceAccount", "/metrics", prometheus, 200},
	} {
		code, body, err := get(tc.path, tc.token)
		if err != nil || code != tc.want {
			t.Errorf("%s: GET %s: %d %v, want %d\n%s", tc.name, tc.path, code, err, tc.want, tail(body, 500))
		}
		if tc.want == 200 && tc.path == "/metrics" && !strings.Contains(body, "evictguard_signal_state") {
			t.Errorf("%s: /metrics without evictguard's metrics:\n%s", tc.name, tail(body, 500))
		}
	}

	// Cached reviews: ten scrapes with the same token ask the API server nothing new.
	reviews := func() float64 {
		raw, err := a.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0.0
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `verb="POST"`) &&
				(strings.Contains(line, `resource="tokenreviews"`) || strings.Contains(line, `resource="subjectaccessreviews"`)) {
				var v float64
				if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err == nil {
					n += v
				}
			}
		}
		return n
	}
	before := reviews()
	if before < 2 {
		t.Fatalf("the API server counted %v reviews for the requests above, want at least 2", before)
	}
	for range 10 {
		if code, _, err := get("/metrics", prometheus); err != nil || code != 200 {
			t.Fatalf("scrape: %d %v", code, err)
		}
	}
	if after := reviews(); after != before {
		t.Errorf("10 scrapes with a cached token made %v reviews, want 0", after-before)
	}
	if rss, ok := vmRSS(p.Cmd.Process.Pid); ok {
		t.Logf("evictguard run with metrics auth after %v reviews and 16 scrapes: %.1f MiB", before, rss)
	}

	// A real Prometheus scrapes it over HTTPS with its ServiceAccount's token.
	tokenFile := filepath.Join(dir, "prometheus-token")
	if err := os.WriteFile(tokenFile, []byte(prometheus), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := harness.StartPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
- job_name: evictguard
  scheme: https
  authorization:
    credentials_file: %q
  tls_config:
    insecure_skip_verify: true
  static_configs:
  - targets: [%q]
`, tokenFile, listen), nil)
	err = harness.WaitFor(ctx, 30*time.Second, prom.Proc, func() error {
		res, err := promQuery(prom, `up{job="evictguard"} == 1 and on(instance) evictguard_signal_state{signal="nodefs.available"}`)
		if err != nil {
			return err
		}
		if len(res) == 0 {
			return fmt.Errorf("not scraped yet")
		}
		return nil
	})
	if err != nil {
		b, _, _ := httpGetCode(prom.URL + "/api/v1/targets")
		t.Fatalf("Prometheus: %v\ntargets: %s", err, b)
	}
}
