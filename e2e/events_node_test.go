package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/evictguard/evictguard/e2e/harness"
)

// applyManifest creates every object of a multi-document YAML file with client-go.
func applyManifest(t *testing.T, c kubernetes.Interface, path string) {
	t.Helper()
	ctx := context.Background()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected object %T", path, obj)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: create %T: %v", path, obj, err)
		}
	}
}

// TestEventsNodeConditionLeastPrivilege: the daemon, running as the ServiceAccount of
// deploy/kubernetes/rbac.yaml (a TokenRequest token, not admin), puts Events and its
// EvictionPredicted condition on the Node while the tmpfs nodefs fills, clears the condition
// when space is freed, and a restarted daemon does not duplicate any Event.
func TestEventsNodeConditionLeastPrivilege(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	start := time.Now()
	ctx := context.Background()
	a := harness.StartAPIServer(t)
	const nodeName = "evictguard-e2e-node"
	if _, err := a.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyManifest(t, a.Client, "../deploy/kubernetes/rbac.yaml")
	tr, err := a.Client.CoreV1().ServiceAccounts("evictguard").CreateToken(ctx, "evictguard",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	// The identity is least-privilege: it cannot read secrets or list nodes.
	sa, err := kubernetes.NewForConfig(a.TokenConfig(tr.Status.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("ServiceAccount list secrets: err = %v, want Forbidden", err)
	}
	if _, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("ServiceAccount list nodes: err = %v, want Forbidden", err)
	}
	kubeconfig := filepath.Join(harness.TempDir(t, "sa-kubeconfig"), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(harness.KubeconfigFor(a.URL, tr.Status.Token)), 0o600); err != nil {
		t.Fatal(err)
	}

	sc := newFillScenario(t, 90*time.Second, 256<<10)
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	args := sc.Args(listen, "--kubeconfig", kubeconfig, "--node-name", nodeName, "--alert-for", "3s")
	p := startDaemon(t, "evictguard-events", args...)

	events := func() (map[string][]corev1.Event, error) {
		l, err := a.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("involvedObject.kind", "Node"), fields.OneTermEqualSelector("involvedObject.name", nodeName)).String()})
		if err != nil {
			return nil, err
		}
		m := map[string][]corev1.Event{}
		for _, e := range l.Items {
			m[e.Reason] = append(m[e.Reason], e)
		}
		return m, nil
	}
	condition := func() (corev1.NodeCondition, error) {
		n, err := a.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return corev1.NodeCondition{}, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == "EvictionPredicted" {
				return c, nil
			}
		}
		return corev1.NodeCondition{}, errors.New("no EvictionPredicted condition")
	}

	// Before filling: thresholds discovered, condition False.
	err = harness.WaitFor(ctx, 30*time.Second, p, func() error {
		ev, err := events()
		if err != nil {
			return err
		}
		if len(ev["EvictionThresholdsDiscovered"]) != 1 {
			return fmt.Errorf("EvictionThresholdsDiscovered events: %d", len(ev["EvictionThresholdsDiscovered"]))
		}
		c, err := condition()
		if err != nil {
			return err
		}
		if c.Status != corev1.ConditionFalse {
			return fmt.Errorf("condition %s before filling", c.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}

	stop := sc.StartWriter(t)
	var cond corev1.NodeCondition
	err = harness.WaitFor(ctx, 80*time.Second, p, func() error {
		ev, err := events()
		if err != nil {
			return err
		}
		if len(ev["EvictionImminent"]) != 1 {
			return fmt.Errorf("EvictionImminent events: %d", len(ev["EvictionImminent"]))
		}
		if cond, err = condition(); err != nil {
			return err
		}
		if cond.Status != corev1.ConditionTrue {
			return fmt.Errorf("condition %s: %s", cond.Status, cond.Message)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("filling: %v", err)
	}
	if sc.Available(t) <= sc.Threshold {
		t.Errorf("condition set only after the threshold was crossed")
	}
	if cond.Reason != "EvictionImminent" || !strings.Contains(cond.Message, "nodefs.available (hard) reaches its eviction threshold in ") ||
		!strings.Contains(cond.Message, time.Now().UTC().Format("2006-01-02T")) {
		t.Errorf("condition = %+v; want the signal and the predicted time in the message", cond)
	}
	ev, _ := events()
	imm := ev["EvictionImminent"][0]
	if imm.Type != corev1.EventTypeWarning || imm.Source.Component != "evictguard" || !strings.Contains(imm.Message, "nodefs.available") {
		t.Errorf("EvictionImminent event = %+v", imm)
	}
	t.Logf("condition: %s: %s", cond.Reason, cond.Message)
	t.Logf("event: %s: %s", imm.Reason, imm.Message)

	stop()
	sc.Free(t)
	err = harness.WaitFor(ctx, 120*time.Second, p, func() error {
		c, err := condition()
		if err != nil {
			return err
		}
		if c.Status != corev1.ConditionFalse || c.Reason != "NoEvictionPredicted" {
			return fmt.Errorf("condition %s %s: %s", c.Status, c.Reason, c.Message)
		}
		ev, err := events()
		if err != nil {
			return err
		}
		if len(ev["EvictionNoLongerImminent"]) != 1 {
			return errors.New("no EvictionNoLongerImminent event")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after freeing: %v", err)
	}

	// Restart: the same Events, no new ones, counts unchanged.
	before, err := events()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p2 := startDaemon(t, "evictguard-events-restarted", args...)
	err = harness.WaitFor(ctx, 20*time.Second, p2, func() error {
		if !strings.Contains(p2.Log(), "node condition set") {
			return errors.New("restarted daemon has not synced the node yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	after, err := events()
	if err != nil {
		t.Fatal(err)
	}
	summary := func(m map[string][]corev1.Event) string {
		var parts []string
		for reason, es := range m {
			for _, e := range es {
				parts = append(parts, fmt.Sprintf("%s %s count=%d", reason, e.Name, e.Count))
			}
		}
		return strings.Join(parts, "\n")
	}
	for reason, es := range after {
		if len(es) != 1 {
			t.Errorf("%d %s events after restart, want 1:\n%s", len(es), reason, summary(after))
		}
		if b := before[reason]; len(b) != 1 || b[0].Count != es[0].Count {
			t.Errorf("%s changed across the restart:\nbefore:\n%s\nafter:\n%s", reason, summary(before), summary(after))
		}
	}
	t.Logf("events after restart:\n%s\ntest took %s", summary(after), time.Since(start).Round(time.Second))
}

func ptr[T any](v T) *T { return &v }
