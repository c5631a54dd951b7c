package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/monitor/feed"
)

// TestFleetView: the real NodeReporter writes the EvictionPredicted condition and the
// evictguard.dev/headroom annotation through the nodes/status subresource of a real
// kube-apiserver (the annotation rides on the condition's patch), and `evictguard fleet`,
// with an identity that may only list nodes, shows them in table and JSON, sorted.
func TestFleetView(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := harness.StartAPIServer(t)

	for _, n := range []string{"fleet-soon", "fleet-later", "fleet-breached", "fleet-calm", "fleet-plain"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"pool": "a"}}}
		if n == "fleet-plain" {
			node.Labels["pool"] = "b"
		}
		if _, err := a.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const gib = int64(1) << 30
	rate := 1.0
	sig := func(signal string, headroom, capacity int64, state monitor.State, seconds *float64) monitor.SignalStatus {
		return monitor.SignalStatus{Signal: signal, Kind: "hard", Threshold: "10%", Headroom: headroom, Capacity: capacity,
			State: state, SecondsToThreshold: seconds, FillRate: &rate}
	}
	secs := func(v float64) *float64 { return &v }
	now := time.Now()
	snaps := map[string]*monitor.Snapshot{
		// nearest: imagefs, predicted sooner than nodefs although it has more headroom
		"fleet-soon": {Time: now, Signals: []monitor.SignalStatus{
			sig("nodefs.available", 2*gib, 100*gib, monitor.StateWarning, secs(3000)),
			sig("imagefs.available", 5*gib, 100*gib, monitor.StateWarning, secs(1200)),
		}},
		"fleet-later":    {Time: now, Signals: []monitor.SignalStatus{sig("nodefs.available", 8*gib, 100*gib, monitor.StateWarning, secs(3500))}},
		"fleet-breached": {Time: now, Signals: []monitor.SignalStatus{sig("nodefs.available", -gib/2, 100*gib, monitor.StateBreached, nil)}},
		"fleet-calm":     {Time: now, Signals: []monitor.SignalStatus{sig("nodefs.inodesFree", 400000, 1000000, monitor.StateOK, nil)}},
	}
	client := productClient(t, a)
	for name, snap := range snaps {
		r, err := feed.NewNodeReporter(feed.NodeConfig{Client: client, Node: name, Policy: feed.Policy{For: -1}, QPS: 100})
		if err != nil {
			t.Fatal(err)
		}
		go r.Run(ctx)
		r.Notify(snap)
	}
	err := waitCondition(ctx, 30*time.Second, func() error {
		for name := range snaps {
			n, err := a.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if _, ok := n.Annotations[feed.AnnotationHeadroom]; !ok {
				return &notYet{name + ": no " + feed.AnnotationHeadroom + " annotation yet"}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the reporters' status patches: %v", err)
	}
	n, err := a.Client.CoreV1().Nodes().Get(ctx, "fleet-soon", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fleet-soon: %s=%s", feed.AnnotationHeadroom, n.Annotations[feed.AnnotationHeadroom])

	kubeconfig := readOnlyKubeconfig(t, ctx, a)

	out, stderr, code := runEvictguard(t, "fleet", "--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("fleet: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("evictguard fleet:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	order := []string{"fleet-breached", "fleet-soon", "fleet-later", "fleet-calm", "fleet-plain"}
	if len(lines) != len(order)+1 || !strings.HasPrefix(lines[0], "NODE") {
		t.Fatalf("table:\n%s", out)
	}
	for i, want := range []struct{ node, contains string }{
		{"fleet-breached", "True EvictionThresholdBreached  nodefs.available (hard)  breached  -512 MiB (-0.5%)  past threshold"},
		{"fleet-soon", "imagefs.available (hard)  warning  5.0 GiB (5%)  20m0s"},
		{"fleet-later", "nodefs.available (hard)  warning  8.0 GiB (8%)  58m20s"},
		{"fleet-calm", "False NoEvictionPredicted  nodefs.inodesFree (hard)  ok  400000 inodes (40%)  -"},
		{"fleet-plain", "(no evictguard data)"},
	} {
		f := strings.Fields(lines[i+1])
		if f[0] != want.node || !strings.Contains(strings.Join(strings.Fields(lines[i+1]), " "), strings.Join(strings.Fields(want.contains), " ")) {
			t.Errorf("row %d = %q, want %s with %q", i+1, lines[i+1], want.node, want.contains)
		}
	}

	out, stderr, code = runEvictguard(t, "fleet", "--kubeconfig", kubeconfig, "-o", "json", "--sort", "headroom", "--selector", "pool=a")
	if code != 0 {
		t.Fatalf("fleet -o json: exit %d\n%s%s", code, out, stderr)
	}
	var rows []struct {
		Name       string         `json:"name"`
		Evictguard bool           `json:"evictguard"`
		Condition  string         `json:"condition"`
		Nearest    *feed.Headroom `json:"nearest"`
		Heartbeat  *time.Time     `json:"lastHeartbeat"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("fleet -o json: %v\n%s", err, out)
	}
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
		if !r.Evictguard || r.Nearest == nil || r.Heartbeat == nil || time.Since(*r.Heartbeat) > time.Minute {
			t.Errorf("%s: %+v", r.Name, r)
		}
	}
	if got, want := strings.Join(names, " "), "fleet-breached fleet-soon fleet-later fleet-calm"; got != want {
		t.Errorf("--sort headroom --selector pool=a: %s, want %s", got, want)
	}
	if len(rows) > 1 && (rows[1].Nearest.Signal != "imagefs.available" || rows[1].Nearest.Seconds == nil || *rows[1].Nearest.Seconds != 1200 || rows[1].Nearest.Headroom != 5*gib) {
		t.Errorf("fleet-soon nearest = %+v", rows[1].Nearest)
	}
	t.Logf("evictguard fleet -o json --sort headroom --selector pool=a:\n%s", out)
}

type notYet struct{ msg string }

func (e *notYet) Error() string { return e.msg }

// readOnlyKubeconfig is a kubeconfig for a ServiceAccount that may only list nodes: what
// docs/fleet.md says `evictguard fleet` needs.
func readOnlyKubeconfig(t *testing.T, ctx context.Context, a *harness.APIServer) string {
	t.Helper()
	const ns, name = "default", "fleet-viewer"
	if _, err := a.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: name}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := a.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fleet-viewer.kubeconfig")
	if err := os.WriteFile(p, []byte(harness.KubeconfigFor(a.URL, tr.Status.Token)), 0o600); err != nil {
		t.Fatal(err)
	}
	// RBAC takes effect asynchronously in the API server's cache.
	if err := waitCondition(ctx, 10*time.Second, func() error {
		_, stderr, code := runEvictguard(t, "fleet", "--kubeconfig", p)
		if code != 0 {
			return &notYet{stderr}
		}
		return nil
	}); err != nil {
		t.Fatalf("fleet as %s: %v", name, err)
	}
	return p
}
