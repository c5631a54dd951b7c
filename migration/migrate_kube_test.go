package migration

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
)

func TestCordonRemembersAndDrainSkipsDaemonSetsAndStaticPods(t *testing.T) {
	ctx := context.Background()
	yes := true
	pod := func(name string, mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if mod != nil {
			mod(p)
		}
		return p
	}
	ds := pod("ds", func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "x", Controller: &yes}}
	})
	static := pod("static", func(p *corev1.Pod) { p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"} })
	done := pod("done", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	app := pod("app", nil)
	for _, tc := range []struct {
		p    *corev1.Pod
		want bool
	}{{ds, false}, {static, false}, {done, false}, {app, true}} {
		if got := evictable(tc.p); got != tc.want {
			t.Errorf("evictable(%s) = %t, want %t", tc.p.Name, got, tc.want)
		}
	}

	c := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, ds, static, done)
	was, err := setUnschedulable(ctx, kubetest.New(c), "n1", true)
	if err != nil || was {
		t.Fatalf("first cordon: was %t, %v", was, err)
	}
	was, err = setUnschedulable(ctx, kubetest.New(c), "n1", true)
	if err != nil || !was {
		t.Fatalf("second cordon must see the node already cordoned: was %t, %v", was, err)
	}
	n, _ := c.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if !n.Spec.Unschedulable {
		t.Error("node not cordoned")
	}
	// Only non-evictable pods: the drain is done at once.
	if err := drainNode(ctx, kubetest.New(c), "n1", 5*time.Second, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}

func TestPlanMigrationRefusesWithoutTouching(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"unknown runtime", Options{Runtime: "podman", Target: "/data"}, "unknown runtime"},
		{"relative target", Options{Runtime: RuntimeDocker, Target: "data"}, "absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Root = "/nonexistent-host-root"
			p, err := NewPlan(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if p.OK() || !containsAny(p.Refusals, tc.want) {
				t.Errorf("refusals %q, want one mentioning %q", p.Refusals, tc.want)
			}
		})
	}
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
