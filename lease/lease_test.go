package lease

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
)

func lease(name, holder string, renew time.Time, ttl int32) *coordinationv1.Lease {
	t := metav1.NewMicroTime(renew)
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: &ttl, RenewTime: &t, AcquireTime: &t}}
	if holder != "" {
		l.Spec.HolderIdentity = &holder
	}
	return l
}

func TestLockAcquire(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		existing []*coordinationv1.Lease
		wantSlot string
		wantWhy  string
	}{
		{"no leases yet", nil, "eg-0", ""},
		{"first held, second missing", []*coordinationv1.Lease{lease("eg-0", "b", now, 60)}, "eg-1", ""},
		{"all held", []*coordinationv1.Lease{lease("eg-0", "b", now, 60), lease("eg-1", "c", now.Add(-30*time.Second), 60)}, "", "held by b; eg-1 held by c"},
		{"expired one is taken over", []*coordinationv1.Lease{lease("eg-0", "b", now, 60), lease("eg-1", "c", now.Add(-61*time.Second), 60)}, "eg-1", ""},
		{"released one is free", []*coordinationv1.Lease{lease("eg-0", "", now, 60), lease("eg-1", "c", now, 60)}, "eg-0", ""},
		// A slot this node still holds (an interrupted run) is renewed, never a second one taken.
		{"own slot renewed", []*coordinationv1.Lease{lease("eg-0", "", now, 60), lease("eg-1", "a", now.Add(-10*time.Second), 60)}, "eg-1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientset()
			for _, l := range tc.existing {
				if _, err := c.CoordinationV1().Leases("kube-system").Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			l := &Lock{Client: kubetest.New(c), Namespace: "kube-system", Name: "eg", Slots: 2, TTL: time.Minute, Identity: "a", Now: func() time.Time { return now }}
			slot, why, err := l.Acquire(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if slot != tc.wantSlot || !strings.Contains(why, tc.wantWhy) {
				t.Fatalf("Acquire = %q, %q; want %q, …%q…", slot, why, tc.wantSlot, tc.wantWhy)
			}
			if slot == "" {
				return
			}
			got, err := c.CoordinationV1().Leases("kube-system").Get(context.Background(), slot, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if *got.Spec.HolderIdentity != "a" || !got.Spec.RenewTime.Time.Equal(now) || *got.Spec.LeaseDurationSeconds != 60 {
				t.Errorf("lease after acquire: %+v", got.Spec)
			}
			if err := l.Release(context.Background(), slot); err != nil {
				t.Fatal(err)
			}
			got, _ = c.CoordinationV1().Leases("kube-system").Get(context.Background(), slot, metav1.GetOptions{})
			if got.Spec.HolderIdentity != nil {
				t.Errorf("lease after release still held by %q", *got.Spec.HolderIdentity)
			}
		})
	}
}

// Release leaves a slot alone that another node has taken over meanwhile.
func TestLockReleaseNotOurs(t *testing.T) {
	c := fake.NewClientset(lease("eg-0", "b", time.Now(), 60))
	l := &Lock{Client: kubetest.New(c), Namespace: "kube-system", Name: "eg", Slots: 1, TTL: time.Minute, Identity: "a"}
	if err := l.Release(context.Background(), "eg-0"); err != nil {
		t.Fatal(err)
	}
	got, _ := c.CoordinationV1().Leases("kube-system").Get(context.Background(), "eg-0", metav1.GetOptions{})
	if got.Spec.HolderIdentity == nil || *got.Spec.HolderIdentity != "b" {
		t.Errorf("release took another node's lease: %+v", got.Spec)
	}
}
