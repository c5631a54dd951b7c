package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/internal/kube"
)

// Lock is the cluster-wide restart concurrency limit: Slots coordination.k8s.io Leases
// <Name>-0…<Name>-<Slots-1> in Namespace. A node holds at most one; a lease whose holder has
// not renewed it within its duration is free. Updates use the resourceVersion, so two nodes
// never both win the same slot.
type Lock struct {
	Client    kube.Interface
	Namespace string
	Name      string
	Slots     int
	TTL       time.Duration
	Identity  string
	Now       func() time.Time
}

// Acquire takes a free slot and returns its name; "" and a reason when every slot is held.
// A slot this node already holds (e.g. from an interrupted run) is renewed and returned, so a
// node never holds two. Every write is a Create or an Update carrying the resourceVersion that
// was read, so when two nodes race for the same slot exactly one wins and the other moves on.
// Errors (API server unreachable) must be treated as a block.
func (l *Lock) Acquire(ctx context.Context) (string, string, error) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	if l.Slots <= 0 {
		return "", "", errors.New("lease lock: no slots configured")
	}
	if l.Identity == "" {
		return "", "", errors.New("lease lock: empty identity (node name)")
	}
	ttl := int32(max(1, l.TTL.Round(time.Second)/time.Second))
	id := l.Identity
	current := make([]*coordinationv1.Lease, l.Slots) // nil: does not exist yet
	for i := range l.Slots {
		name := l.slotName(i)
		cur, err := l.Client.GetLease(ctx, l.Namespace, name)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return "", "", fmt.Errorf("get lease %s/%s: %w", l.Namespace, name, err)
		}
		current[i] = cur
		if cur.Spec.HolderIdentity != nil && *cur.Spec.HolderIdentity == id {
			// Ours already: renew it (and give up the slot's other copies, if any, below).
			t := metav1.NewMicroTime(now())
			cur.Spec.LeaseDurationSeconds, cur.Spec.RenewTime = &ttl, &t
			if cur.Spec.AcquireTime == nil {
				cur.Spec.AcquireTime = &t
			}
			if _, err := l.Client.UpdateLease(ctx, cur); err != nil {
				if apierrors.IsConflict(err) {
					current[i] = nil
					continue // someone took it over after it expired; look for another
				}
				return "", "", fmt.Errorf("renew lease %s/%s: %w", l.Namespace, name, err)
			}
			return name, "", nil
		}
	}
	var holders []string
	for i := range l.Slots {
		name := l.slotName(i)
		t := metav1.NewMicroTime(now())
		cur := current[i]
		if cur == nil {
			_, err := l.Client.CreateLease(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: l.Namespace, Labels: map[string]string{"app.kubernetes.io/name": "evictguard"}},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &ttl, AcquireTime: &t, RenewTime: &t},
			})
			if apierrors.IsAlreadyExists(err) {
				holders = append(holders, name+": just taken by another node")
				continue
			}
			if err != nil {
				return "", "", fmt.Errorf("create lease %s/%s: %w", l.Namespace, name, err)
			}
			return name, "", nil
		}
		holder := ""
		if cur.Spec.HolderIdentity != nil {
			holder = *cur.Spec.HolderIdentity
		}
		if holder != "" && !leaseExpired(cur, now()) {
			holders = append(holders, name+" held by "+holder)
			continue
		}
		// Free (released or expired): take it over, conditional on the resourceVersion read.
		cur.Spec.HolderIdentity, cur.Spec.LeaseDurationSeconds, cur.Spec.AcquireTime, cur.Spec.RenewTime = &id, &ttl, &t, &t
		if cur.Spec.LeaseTransitions == nil {
			cur.Spec.LeaseTransitions = new(int32)
		}
		*cur.Spec.LeaseTransitions++
		if _, err := l.Client.UpdateLease(ctx, cur); err != nil {
			if apierrors.IsConflict(err) {
				holders = append(holders, name+": just taken by another node")
				continue
			}
			return "", "", fmt.Errorf("update lease %s/%s: %w", l.Namespace, name, err)
		}
		return name, "", nil
	}
	return "", fmt.Sprintf("cluster restart limit reached: all %d lease slot(s) %s-0…%s-%d in %s are held (%s)",
		l.Slots, l.Name, l.Name, l.Slots-1, l.Namespace, strings.Join(holders, "; ")), nil
}

func (l *Lock) slotName(i int) string { return fmt.Sprintf("%s-%d", l.Name, i) }

func leaseExpired(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	return now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// Release frees the slot if this node still holds it (retrying on a conflicting update).
// Callers release on success and on failure alike; a node that dies holding a slot frees it
// when the TTL runs out.
func (l *Lock) Release(ctx context.Context, name string) error {
	for attempt := 0; ; attempt++ {
		cur, err := l.Client.GetLease(ctx, l.Namespace, name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get lease %s/%s: %w", l.Namespace, name, err)
		}
		if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.Identity {
			return nil
		}
		cur.Spec.HolderIdentity = nil
		_, err = l.Client.UpdateLease(ctx, cur)
		switch {
		case err == nil:
			return nil
		case apierrors.IsConflict(err) && attempt < 5:
			continue
		default:
			return fmt.Errorf("release lease %s/%s: %w", l.Namespace, name, err)
		}
	}
}
