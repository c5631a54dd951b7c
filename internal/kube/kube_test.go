package kube

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.kubeconfig")
	if err := os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	tests := []struct {
		name       string
		kubeconfig string
		wantErr    error
		wantHost   string
	}{
		{"kubeconfig", good, nil, "https://127.0.0.1:6443"},
		{"missing kubeconfig", filepath.Join(dir, "nope"), nil, ""},
		{"no cluster", "", ErrNoCluster, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(tc.kubeconfig, 2, 4)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			case tc.wantHost == "":
				if err == nil {
					t.Fatal("no error for a missing kubeconfig")
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Host != tc.wantHost || cfg.BearerToken != "abc" || cfg.QPS != 2 || cfg.Burst != 4 || cfg.UserAgent != UserAgent {
					t.Errorf("cfg = host %s token %s qps %v burst %d ua %s", cfg.Host, cfg.BearerToken, cfg.QPS, cfg.Burst, cfg.UserAgent)
				}
			}
		})
	}
}
