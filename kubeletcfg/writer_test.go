package kubeletcfg

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// copyHost copies a fixture host tree so a test can apply a plan to it.
func copyHost(t *testing.T, name string) hostfs.Root {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "host")
	if name == "" {
		return hostfs.Root(dst)
	}
	if err := os.CopyFS(dst, os.DirFS(filepath.Join("testdata", "hosts", name))); err != nil {
		t.Fatal(err)
	}
	return hostfs.Root(dst)
}

func applyPlan(t *testing.T, root hostfs.Root, p *WritePlan) {
	t.Helper()
	for _, f := range p.Files {
		if err := os.MkdirAll(filepath.Dir(root.Path(f.Path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root.Path(f.Path), f.After, f.Perm); err != nil {
			t.Fatal(err)
		}
	}
}

func hardOf(eff *Effective) map[string]string {
	out := map[string]string{}
	for _, th := range eff.Thresholds {
		if th.Kind == Hard && th.Signal != SignalAllocatableMemoryAvailable {
			out[th.Signal] = th.Raw
		}
	}
	return out
}

// TestPlanEvictionWriteRoundTrip plans a write on each fixture layout, applies it to a copy,
// and checks that discovery — which follows the kubelet's own precedence — then computes exactly
// the map written, through the method the provenance calls for; a second plan changes nothing.
func TestPlanEvictionWriteRoundTrip(t *testing.T) {
	cases := []struct {
		name, host, version string
		hard                map[string]string
		want                WriteMethod
		wantFile            string
		contains            []string
	}{
		{
			name: "1.7 drop-in without the variable", host: "kubeadm-1.7-before", version: "1.7",
			hard:     map[string]string{"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%"},
			want:     MethodLegacyDropIn,
			wantFile: "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
			contains: []string{`Environment="KUBELET_EVICTION_POLICY_ARGS=--eviction-hard=memory.available<100Mi,nodefs.available<5%%,nodefs.inodesFree<5%%"`, "$KUBELET_EXTRA_ARGS $KUBELET_EVICTION_POLICY_ARGS\n"},
		},
		{
			name: "1.7 drop-in with the operator's partial flag", host: "kubeadm-1.7-after", version: "1.7",
			hard:     map[string]string{"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%"},
			want:     MethodLegacyDropIn,
			wantFile: "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
			contains: []string{"nodefs.inodesFree<5%%"},
		},
		{
			name: "modern kubeadm deb: own systemd drop-in", host: "deb-1.35", version: "1.35",
			hard: map[string]string{"memory.available": "100Mi", "nodefs.available": "5%", "nodefs.inodesFree": "5%",
				"imagefs.available": "5%", "imagefs.inodesFree": "5%"},
			want:     MethodSystemdDropIn,
			wantFile: "/etc/systemd/system/kubelet.service.d/90-evictguard.conf",
			contains: []string{"ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS $EVICTGUARD_EVICTION_ARGS\n"},
		},
		{
			name: "config-dir", host: "configdir-1.35", version: "1.35",
			hard: map[string]string{"memory.available": "500Mi", "nodefs.available": "5%", "nodefs.inodesFree": "10%",
				"imagefs.available": "6%"},
			want:     MethodConfigDir,
			wantFile: "/etc/kubernetes/kubelet.conf.d/90-evictguard.conf",
			contains: []string{"apiVersion: kubelet.config.k8s.io/v1beta1", `imagefs.available: "6%"`},
		},
		{
			name: "an --eviction-hard flag beats the config-dir", host: "flag-overrides-1.35", version: "1.35",
			hard: map[string]string{"memory.available": "300Mi", "nodefs.available": "4%", "imagefs.available": "5%",
				"nodefs.inodesFree": "5%", "imagefs.inodesFree": "5%"},
			want:     MethodSystemdDropIn,
			wantFile: "/etc/systemd/system/kubelet.service.d/90-evictguard.conf",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := copyHost(t, tc.host)
			p, err := PlanEvictionWrite(WriteRequest{Root: root, Version: tc.version, Hard: tc.hard})
			if err != nil {
				t.Fatal(err)
			}
			if p.Method != tc.want || len(p.Files) != 1 || p.Files[0].Path != tc.wantFile {
				t.Fatalf("method %s files %+v, want %s on %s; reasons %q", p.Method, p.Files, tc.want, tc.wantFile, p.Reasons)
			}
			for _, c := range tc.contains {
				if !strings.Contains(string(p.Files[0].After), c) {
					t.Errorf("new %s lacks %q:\n%s", tc.wantFile, c, p.Files[0].After)
				}
			}
			applyPlan(t, root, p)
			eff, err := Discover(context.Background(), Options{HostRoot: root, Version: tc.version})
			if err != nil {
				t.Fatal(err)
			}
			if got := hardOf(eff); !maps.Equal(got, tc.hard) {
				t.Errorf("after the write the kubelet enforces %v, want %v (warnings %q)", got, tc.hard, eff.Warnings)
			}
			again, err := PlanEvictionWrite(WriteRequest{Root: root, Version: tc.version, Hard: tc.hard})
			if err != nil {
				t.Fatal(err)
			}
			if again.Method != tc.want || again.Files[0].Changed() {
				t.Errorf("second plan is not a no-op: %s\n%s", again.Method, UnifiedDiffForTest(again.Files[0]))
			}
		})
	}
}

func UnifiedDiffForTest(f FileWrite) string { return string(f.Before) + "\n---\n" + string(f.After) }

func TestPlanEvictionWriteRefuses(t *testing.T) {
	cases := []struct {
		name, host string
		req        WriteRequest
		wantErr    string
		is         error
	}{
		{name: "value the kubelet rejects", host: "deb-1.35", req: WriteRequest{Version: "1.35", Hard: map[string]string{"nodefs.available": "0"}}, wantErr: "refuse"},
		{name: "unknown signal", host: "deb-1.35", req: WriteRequest{Version: "1.35", Hard: map[string]string{"allocatableNodeFs.available": "5%"}}, wantErr: "refuse"},
		{name: "empty map", host: "deb-1.35", req: WriteRequest{Version: "1.35", Hard: map[string]string{}}, wantErr: "empty"},
		{name: "kubelet-owned signal", host: "deb-1.35", req: WriteRequest{Version: "1.35", Hard: map[string]string{"allocatableMemory.available": "100Mi"}}, wantErr: "kubelet itself"},
		{name: "config-dir while a flag overrides it", host: "flag-overrides-1.35", req: WriteRequest{Version: "1.35", Method: MethodConfigDir, Hard: map[string]string{"nodefs.available": "5%"}}, is: ErrFlagOverrides},
		{name: "config file while a flag overrides it", host: "flag-overrides-1.35", req: WriteRequest{Version: "1.35", Method: MethodConfigFile, Hard: map[string]string{"nodefs.available": "5%"}}, is: ErrFlagOverrides},
		{name: "an earlier flag's key cannot be dropped", host: "flag-overrides-1.35", req: WriteRequest{Version: "1.35", Hard: map[string]string{"nodefs.available": "5%"}}, wantErr: "cannot be removed"},
		{name: "no kubelet unit", host: "", req: WriteRequest{Version: "1.35", Hard: map[string]string{"nodefs.available": "5%"}}, wantErr: "no kubelet.service"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Root = copyHost(t, tc.host)
			_, err := PlanEvictionWrite(tc.req)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q lacks %q", err, tc.wantErr)
			}
		})
	}
}

func TestRewriteConfigFileEvictionHard(t *testing.T) {
	in := []byte("# kubelet config\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n# thresholds\nevictionHard:\n  nodefs.available: 10%\nport: 10250\n")
	out, err := RewriteConfigFileEvictionHard(in, map[string]string{"nodefs.available": "5%", "memory.available": "100Mi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# kubelet config", "# thresholds", `memory.available: "100Mi"`, `nodefs.available: "5%"`, "port: 10250"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	again, err := RewriteConfigFileEvictionHard(out, map[string]string{"nodefs.available": "5%", "memory.available": "100Mi"})
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("not idempotent (%v):\n%s\n---\n%s", err, out, again)
	}
}

func TestRewriteLegacyDropInIdempotentAndEscaped(t *testing.T) {
	in := []byte("[Service]\nEnvironment=\"A=1\"\nExecStart=\nExecStart=/usr/bin/kubelet $A \\\n  $KUBELET_EXTRA_ARGS\n")
	hard := map[string]string{"nodefs.available": "5%"}
	out, err := RewriteLegacyDropIn(in, hard)
	if err != nil {
		t.Fatal(err)
	}
	want := "[Service]\nEnvironment=\"A=1\"\nEnvironment=\"KUBELET_EVICTION_POLICY_ARGS=--eviction-hard=nodefs.available<5%%\"\nExecStart=\nExecStart=/usr/bin/kubelet $A \\\n  $KUBELET_EXTRA_ARGS $KUBELET_EVICTION_POLICY_ARGS\n"
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	again, err := RewriteLegacyDropIn(out, hard)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("second rewrite differs (%v):\n%s", err, again)
	}
}
