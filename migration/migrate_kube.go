package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/evictguard/evictguard/internal/kube"
)

// setUnschedulable cordons or uncordons node and returns whether it was cordoned before.
func setUnschedulable(ctx context.Context, c kube.Interface, node string, v bool) (bool, error) {
	n, err := c.GetNode(ctx, node)
	if err != nil {
		return false, fmt.Errorf("get node %s: %w", node, err)
	}
	was := n.Spec.Unschedulable
	if was == v {
		return was, nil
	}
	patch := fmt.Appendf(nil, `{"spec":{"unschedulable":%t}}`, v)
	if _, err := c.PatchNode(ctx, node, types.StrategicMergePatchType, patch); err != nil {
		return was, fmt.Errorf("patch node %s unschedulable=%t: %w", node, v, err)
	}
	return was, nil
}

// drainNode evicts every pod on node through the Eviction API, which honours
// PodDisruptionBudgets: a refused eviction (429) is retried until timeout. DaemonSet pods,
// mirror (static) pods and finished pods are left, as kubectl drain leaves them.
func drainNode(ctx context.Context, c kube.Interface, node string, timeout time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		pods, err := c.ListPods(ctx, "", metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return fmt.Errorf("drain %s: list pods: %w", node, err)
		}
		left := 0
		var lastErr error
		for i := range pods.Items {
			p := &pods.Items[i]
			if !evictable(p) {
				continue
			}
			left++
			if p.DeletionTimestamp != nil {
				continue // already going
			}
			err := c.EvictPod(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
			switch {
			case err == nil:
				log.Info("pod evicted", "node", node, "pod", p.Namespace+"/"+p.Name)
			case apierrors.IsNotFound(err):
			case apierrors.IsTooManyRequests(err):
				lastErr = fmt.Errorf("eviction of %s/%s refused (PodDisruptionBudget): %w", p.Namespace, p.Name, err)
			default:
				lastErr = fmt.Errorf("evict %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = fmt.Errorf("%d pod(s) still terminating", left)
			}
			return fmt.Errorf("drain %s did not finish in %s: %w", node, timeout, errors.Join(lastErr, ctx.Err()))
		case <-time.After(2 * time.Second):
		}
	}
}

func evictable(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return false
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return false
		}
	}
	return true
}
