// Package kubetest adapts a client-go clientset (in unit tests the fake one,
// k8s.io/client-go/kubernetes/fake, with its object tracker and reactors) to kube.Interface.
// It is for tests only: product code must not import the clientset (see kube.Interface).
//
// It reads and writes nothing but the clientset it wraps.
package kubetest

import (
	"context"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/evictguard/evictguard/internal/kube"
)

// Adapter is a kube.Interface over a clientset.
type Adapter struct{ C kubernetes.Interface }

var _ kube.Interface = Adapter{}

// New returns c as a kube.Interface.
func New(c kubernetes.Interface) Adapter { return Adapter{C: c} }

// GetNode implements kube.Interface.
func (a Adapter) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	return a.C.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// PatchNode implements kube.Interface.
func (a Adapter) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte) (*corev1.Node, error) {
	return a.C.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{})
}

// PatchNodeStatus implements kube.Interface.
func (a Adapter) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) (*corev1.Node, error) {
	return a.C.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{}, "status")
}

// ListPods implements kube.Interface.
func (a Adapter) ListPods(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.PodList, error) {
	return a.C.CoreV1().Pods(namespace).List(ctx, opts)
}

// EvictPod implements kube.Interface.
func (a Adapter) EvictPod(ctx context.Context, ev *policyv1.Eviction) error {
	return a.C.PolicyV1().Evictions(ev.Namespace).Evict(ctx, ev)
}

// GetEvent implements kube.Interface.
func (a Adapter) GetEvent(ctx context.Context, namespace, name string) (*corev1.Event, error) {
	return a.C.CoreV1().Events(namespace).Get(ctx, name, metav1.GetOptions{})
}

// CreateEvent implements kube.Interface.
func (a Adapter) CreateEvent(ctx context.Context, ev *corev1.Event) (*corev1.Event, error) {
	return a.C.CoreV1().Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{})
}

// PatchEvent implements kube.Interface.
func (a Adapter) PatchEvent(ctx context.Context, namespace, name string, pt types.PatchType, data []byte) (*corev1.Event, error) {
	return a.C.CoreV1().Events(namespace).Patch(ctx, name, pt, data, metav1.PatchOptions{})
}

// GetLease implements kube.Interface.
func (a Adapter) GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	return a.C.CoordinationV1().Leases(namespace).Get(ctx, name, metav1.GetOptions{})
}

// CreateLease implements kube.Interface.
func (a Adapter) CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.C.CoordinationV1().Leases(l.Namespace).Create(ctx, l, metav1.CreateOptions{})
}

// UpdateLease implements kube.Interface.
func (a Adapter) UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.C.CoordinationV1().Leases(l.Namespace).Update(ctx, l, metav1.UpdateOptions{})
}

// CreateTokenReview implements kube.Interface.
func (a Adapter) CreateTokenReview(ctx context.Context, tr *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
	return a.C.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
}

// CreateSubjectAccessReview implements kube.Interface.
func (a Adapter) CreateSubjectAccessReview(ctx context.Context, sar *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error) {
	return a.C.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
}
