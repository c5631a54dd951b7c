package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestThresholdsConfigzViaAPIServer runs `thresholds --configz apiserver` against a stand-in
// API server that proxies node-1's /configz for one token and refuses others the way
// kube-apiserver does (a Status naming nodes/proxy).
func TestThresholdsConfigzViaAPIServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Header.Get("Authorization") != "Bearer operator":
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
				"message": `nodes "node-1" is forbidden: User "system:serviceaccount:evictguard:evictguard" cannot get resource "nodes/proxy" in API group "" at the cluster scope`})
		case r.URL.Path == "/api/v1/nodes/node-1/proxy/configz":
			_, _ = w.Write([]byte(`{"kubeletconfig":{"evictionHard":{"nodefs.available":"5%"}}}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
				"message": `nodes "other" not found`})
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	kubeconfig := func(name, token string) string {
		p := filepath.Join(dir, name)
		c := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: " + srv.URL + "\n    insecure-skip-tls-verify: true\n" +
			"users:\n- name: u\n  user:\n    token: " + token + "\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n"
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	operator, daemon := kubeconfig("operator", "operator"), kubeconfig("daemon", "daemon")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a cluster
	t.Setenv("NODE_NAME", "node-1")
	base := []string{"thresholds", "-o", "json", "--check-usage=false", "--host-root", dir, "--kubelet-version", "1.37", "--configz", "apiserver"}
	wantSource := "configz (apiserver proxy " + srv.URL + "/api/v1/nodes/node-1/proxy/configz)"
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"equal (node from $NODE_NAME)", []string{"--kubelet-cmdline", "--eviction-hard=nodefs.available<5%", "--kubeconfig", operator}, 0,
			[]string{`"configzSource": "` + wantSource + `"`, `"mismatches": []`}, ""},
		{"different", []string{"--kubelet-cmdline", "--eviction-hard=nodefs.available<6%", "--kubeconfig", operator, "--node-name", "node-1"}, 1,
			[]string{`but configz has \"5%\"`}, "1 difference(s) from /configz"},
		{"forbidden without nodes/proxy", []string{"--kubelet-cmdline", "--v=2", "--kubeconfig", daemon}, 1, nil, "needs get on nodes/proxy"},
		{"unknown node", []string{"--kubelet-cmdline", "--v=2", "--kubeconfig", operator, "--node-name", "other"}, 1, nil, `no Node "other"`},
		{"token file is for URLs", []string{"--kubeconfig", operator, "--configz-token-file", tokenFile}, 2, nil, "--configz-token-file is for a kubelet URL"},
		{"no kubeconfig outside a cluster", nil, 2, nil, "--configz apiserver needs --kubeconfig"},
		{"unreadable kubeconfig", []string{"--kubeconfig", filepath.Join(dir, "nope")}, 2, nil, "nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := execute(context.Background(), append(append([]string{}, base...), tc.args...), &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %s stderr %s", code, tc.code, out.String(), errb.String())
			}
			for _, sub := range tc.stdout {
				if !strings.Contains(out.String(), sub) {
					t.Errorf("stdout lacks %s:\n%s", sub, out.String())
				}
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errb.String())
			}
		})
	}
}

// TestPlanConfigzViaAPIServerFlags: plan and apply verify a change through the same
// --configz apiserver settings as thresholds, and refuse the same misuses before acting.
func TestPlanConfigzViaAPIServerFlags(t *testing.T) {
	dir := t.TempDir()
	policy, token := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "token")
	for p, body := range map[string]string{policy: "dryRun: true\n", token: "t\n"} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a cluster
	base := []string{"--host-root", dir, "--policy", policy, "--kubelet-version", "1.37", "--kubelet-cmdline", "--v=2", "--configz", "apiserver"}
	tests := []struct {
		name, cmd string
		args      []string
		stderr    string
	}{
		{"plan: token file is for URLs", "plan", []string{"--configz-token-file", token}, "--configz-token-file is for a kubelet URL"},
		{"plan: no kubeconfig outside a cluster", "plan", nil, "--configz apiserver needs --kubeconfig"},
		{"apply: no kubeconfig outside a cluster", "apply", nil, "--configz apiserver needs --kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := execute(context.Background(), append(append([]string{tc.cmd}, base...), tc.args...), &out, &errb)
			if code != 2 || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d, want 2 with %q; stderr %s", code, tc.stderr, errb.String())
			}
		})
	}
}
