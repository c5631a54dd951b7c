package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/e2e/harness"
)

// policyBase is testPolicy without a cooldown, so that each case can set its own.
const policyBase = `dryRun: false
headroom: {percent: 3}
floor: {percent: 5}
minKubeletUptime: 1s
maxRestartsPerDay: 100
stableFor: 3s
verifyTimeout: 60s
`

// TestRemediatePolicyBlocks proves that each policy gate stops a change that would otherwise
// be made: one real kubelet.service (the seed's 1.7 layout, nodefs at 91.5 %, so a rewrite is
// planned), a real Alertmanager and a real API server. For every gate `evictguard apply --yes`
// exits 1 with the reason on stdout and in the log, writes nothing (unit files, journal and
// restart log byte-identical) and does not restart the kubelet (same MainPID).
func TestRemediatePolicyBlocks(t *testing.T) {
	start := time.Now()
	api := harness.StartAPIServer(t) // the harness one lacks --endpoint-reconciler-type=none
	am := harness.StartAlertmanager(t, "")
	n := startNode(t, layoutKubeadm17, policyBase+"cooldown: 1s\n")
	n.fillTo(t, 0.085)
	time.Sleep(2 * time.Second) // minKubeletUptime

	// Control: with no gate in the way the plan is to act.
	if out, errOut, code := runEvictguard(t, append([]string{"plan"}, n.args()...)...); code != 0 || !strings.Contains(out, "Would act") {
		t.Fatalf("control plan: exit %d, want a plan to act\n%s\n%s", code, out, errOut)
	}

	now := time.Now().UTC()
	lockArgs := []string{"--kubeconfig", api.Kubeconfig, "--node-name", n.NodeName}
	cases := []struct {
		name   string
		policy string
		setup  func(t *testing.T)
		extra  []string
		reason string
	}{
		{
			name: "outside the maintenance window",
			policy: policyBase + "cooldown: 1s\n" + fmt.Sprintf("windows: [{start: %q, end: %q, timeZone: UTC}]\n",
				now.Add(2*time.Hour).Format("15:04"), now.Add(3*time.Hour).Format("15:04")),
			reason: "outside every maintenance window",
		},
		{
			name:   "within cooldown",
			policy: policyBase + "cooldown: 1h\n",
			setup: func(t *testing.T) {
				// As a real apply five minutes ago would have recorded it.
				b, _ := json.Marshal(map[string]any{"restarts": []time.Time{time.Now().UTC().Add(-5 * time.Minute)}})
				writeFile(t, filepath.Join(n.state, "restarts.json"), string(b))
				t.Cleanup(func() { _ = os.Remove(filepath.Join(n.state, "restarts.json")) })
			},
			reason: "within cooldown",
		},
		{
			name:   "blocking alert firing in Alertmanager",
			policy: policyBase + "cooldown: 1s\nblockers: {alertmanagerURL: " + am.URL + ", alertMatchers: ['severity=\"critical\"']}\n",
			setup: func(t *testing.T) {
				postAlert(t, am, map[string]string{"alertname": "EtcdQuorumAtRisk", "severity": "critical", "node": n.NodeName})
			},
			reason: "firing alert(s) match",
		},
		{
			name:   "Alertmanager unreachable (fail closed)",
			policy: policyBase + "cooldown: 1s\nblockers: {alertmanagerURL: " + fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t)) + ", alertMatchers: ['severity=\"critical\"']}\n",
			reason: "alert blocker unreachable (failing closed)",
		},
		{
			name:   "restart Lease full",
			policy: policyBase + "cooldown: 1s\nlock: {slots: 2}\n",
			setup: func(t *testing.T) {
				for i, holder := range []string{"node-b", "node-c"} {
					now := metav1.NewMicroTime(time.Now())
					_, err := api.Client.CoordinationV1().Leases("kube-system").Create(context.Background(), &coordinationv1.Lease{
						ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("evictguard-restart-%d", i)},
						Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr(holder), LeaseDurationSeconds: ptr(int32(600)),
							AcquireTime: &now, RenewTime: &now},
					}, metav1.CreateOptions{})
					if err != nil {
						t.Fatal(err)
					}
				}
			},
			extra:  lockArgs,
			reason: "cluster restart limit reached: all 2 lease slot(s)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, n.policy, tc.policy)
			if tc.setup != nil {
				tc.setup(t)
			}
			files, state, pid := n.unitFiles(t), dirContents(t, n.state), n.mainPID(t)
			out, errOut, code := n.apply(t, nil, tc.extra...)
			if code != 1 {
				t.Fatalf("apply: exit %d, want 1 (blocked)\n%s\n%s", code, out, errOut)
			}
			if !strings.Contains(out, "Would NOT act") || !strings.Contains(out, tc.reason) {
				t.Errorf("stdout does not give the reason %q:\n%s", tc.reason, out)
			}
			if !strings.Contains(errOut, "result=blocked") || !strings.Contains(errOut, tc.reason) {
				t.Errorf("log does not report the block with %q:\n%s", tc.reason, errOut)
			}
			if !maps.Equal(files, n.unitFiles(t)) {
				t.Errorf("unit files changed:\n%v\n%v", files, n.unitFiles(t))
			}
			if after := dirContents(t, n.state); !maps.Equal(state, after) {
				t.Errorf("state dir changed (journal, backups, restart log):\nbefore %v\nafter  %v", keys(state), keys(after))
			}
			if got := n.mainPID(t); got != pid {
				t.Errorf("kubelet MainPID %d → %d: it was restarted", pid, got)
			}
			n.assertConfigz(t, fiveDefaults)
			t.Logf("blocked: %s", firstMatchingLine(out, tc.reason))
		})
	}

	// The Leases are still the other nodes', and the block was recorded as a Node Event.
	for i, holder := range []string{"node-b", "node-c"} {
		l, err := api.Client.CoordinationV1().Leases("kube-system").Get(context.Background(), fmt.Sprintf("evictguard-restart-%d", i), metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != holder {
			t.Errorf("lease %d after the blocked apply: %+v (%v), want held by %s", i, l, err, holder)
		}
	}
	evs, err := api.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == n.NodeName && e.Reason == "EvictionThresholdsBlocked" && strings.Contains(e.Message, "cluster restart limit") {
			found = true
		}
	}
	if !found {
		t.Errorf("no EvictionThresholdsBlocked Event on Node %s among %d events", n.NodeName, len(evs.Items))
	}
	t.Logf("policy blocks: %s", time.Since(start).Round(time.Second))
}

// postAlert fires an alert in Alertmanager through its v2 API and waits until it is active.
func postAlert(t *testing.T, am *harness.Alertmanager, labels map[string]string) {
	t.Helper()
	body, _ := json.Marshal([]map[string]any{{"labels": labels, "startsAt": time.Now().UTC().Format(time.RFC3339),
		"endsAt": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}})
	resp, err := http.Post(am.URL+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post alert: %s", resp.Status)
	}
	err = harness.WaitFor(context.Background(), 30*time.Second, am.Proc, func() error {
		b, code, err := httpGetCode(am.URL + "/api/v2/alerts?active=true&filter=" + "alertname%3D%22" + labels["alertname"] + "%22")
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.Contains(string(b), labels["alertname"]) {
			return fmt.Errorf("alert not active yet (%d): %s", code, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mainPID is the kubelet unit's main process.
func (n *node) mainPID(t *testing.T) uint32 {
	t.Helper()
	p, err := n.Conn.GetServicePropertyContext(context.Background(), "kubelet.service", "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := p.Value.Value().(uint32)
	return pid
}

// dirContents maps every regular file below dir to its content.
func dirContents(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func firstMatchingLine(s, needle string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, needle) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
