package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

const hosts = "../../kubeletcfg/testdata/hosts/"

func TestThresholdsGoldenJSON(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"kubeadm-1.7-after", []string{"--host-root", hosts + "kubeadm-1.7-after", "--kubelet-version", "1.7"}},
		{"configdir-1.35", []string{"--host-root", hosts + "configdir-1.35", "--kubelet-version", "1.35"}},
		{"no-kubelet", []string{"--host-root", "testdata/empty-host"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			// The usage warnings depend on this machine's disks: TestUsageWarnings covers them.
			code := execute(context.Background(), append([]string{"thresholds", "-o", "json", "--check-usage=false"}, tc.args...), &out, &errb)
			if code != 0 {
				t.Fatalf("exit %d, stderr %s", code, errb.String())
			}
			golden := filepath.Join("testdata", "thresholds-"+tc.name+".json")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("output differs from %s (go test -update):\n%s", golden, out.String())
			}
			// The contract fields (README.md#commands) are present with the right types.
			var doc struct {
				Kubelet    struct{ Version, ConfigFile, ConfigDir *string }
				Thresholds []map[string]string
				Warnings   []string
			}
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Kubelet.Version == nil || doc.Kubelet.ConfigFile == nil || doc.Kubelet.ConfigDir == nil || doc.Warnings == nil {
				t.Errorf("contract fields missing: %s", out.String())
			}
			for _, th := range doc.Thresholds {
				for _, k := range []string{"signal", "kind", "value", "gracePeriod", "minimumReclaim", "source"} {
					if _, ok := th[k]; !ok {
						t.Errorf("threshold without %q: %v", k, th)
					}
				}
			}
		})
	}
}

func TestThresholdsExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "var/lib/kubelet/config.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard:\n  nodefs.available: \"0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	configz := filepath.Join(dir, "configz.json")
	if err := os.WriteFile(configz, []byte(`{"kubeletconfig":{"evictionHard":{"nodefs.available":"5%"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{"table", []string{"--host-root", hosts + "kubeadm-1.7-after", "--kubelet-version", "1.7"}, 0,
			"nodefs.available  hard  5%     -      -            flag --eviction-hard in /etc/systemd/system/kubelet.service.d/10-kubeadm.conf:4 via $KUBELET_EVICTION_POLICY_ARGS", ""},
		{"configz match", []string{"--host-root", dir, "--kubelet-cmdline", "--eviction-hard=nodefs.available<5%", "--kubelet-version", "1.35", "--configz", configz}, 0, "nodefs.available", ""},
		{"configz mismatch", []string{"--host-root", dir, "--kubelet-cmdline", "--eviction-hard=nodefs.available<6%", "--kubelet-version", "1.35", "--configz", configz}, 1,
			`evictionHard[nodefs.available]: computed "6%" (flag --eviction-hard in --kubelet-cmdline) but configz has "5%"`, "1 difference(s) from /configz"},
		{"input error", []string{"--host-root", dir, "--kubelet-cmdline", "--config=/var/lib/kubelet/config.yaml", "--kubelet-version", "1.35"}, 2,
			"", "evictguard: /var/lib/kubelet/config.yaml:4: eviction threshold nodefs.available must be positive: 0\n"},
		{"bad cmdline", []string{"--host-root", dir, "--kubelet-cmdline", `--config="x`}, 2, "", "--kubelet-cmdline"},
		{"configz unreadable", []string{"--host-root", dir, "--kubelet-cmdline", "--v=2", "--kubelet-version", "1.35", "--configz", filepath.Join(dir, "nope")}, 1, "", "read configz file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := execute(context.Background(), append([]string{"thresholds"}, tc.args...), &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %s stderr %s", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, out.String())
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errb.String())
			}
			if tc.code == 2 && out.Len() != 0 {
				t.Errorf("partial output on input error: %s", out.String())
			}
		})
	}
}
