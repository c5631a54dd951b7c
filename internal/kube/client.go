package kube

import (
	"context"
	"fmt"
	"net/http"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Interface is the part of the Kubernetes API evictguard uses, and nothing more. Errors are
// client-go's (*errors.StatusError for API responses), so apierrors.IsNotFound, IsConflict,
// IsTooManyRequests and friends work on them.
//
// It is hand-written on k8s.io/client-go/rest instead of using the typed clientset
// (k8s.io/client-go/kubernetes) on purpose: the clientset, with the apply configurations,
// strategic-merge and OpenAPI packages it pulls in, registers every API group at start-up
// and costs the daemon ~9 MiB of RSS (issue #4's 40 MiB budget) for three API groups used.
// Tests may still adapt the fake clientset to it (internal/kube/kubetest).
type Interface interface {
	// GetNode reads a Node.
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
	// PatchNode patches a Node's spec and metadata.
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte) (*corev1.Node, error)
	// PatchNodeStatus patches the status subresource of a Node (its conditions).
	PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) (*corev1.Node, error)

	// ListPods lists the pods in namespace ("" for all) matching opts' label and field
	// selectors.
	ListPods(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.PodList, error)
	// EvictPod asks the Eviction API (policy/v1) to evict a pod; the API server refuses with
	// 429 Too Many Requests when a PodDisruptionBudget forbids it.
	EvictPod(ctx context.Context, ev *policyv1.Eviction) error

	// GetEvent, CreateEvent and PatchEvent work on core/v1 Events.
	GetEvent(ctx context.Context, namespace, name string) (*corev1.Event, error)
	CreateEvent(ctx context.Context, ev *corev1.Event) (*corev1.Event, error)
	PatchEvent(ctx context.Context, namespace, name string, pt types.PatchType, data []byte) (*corev1.Event, error)

	// GetLease, CreateLease and UpdateLease work on coordination.k8s.io/v1 Leases. An update
	// carries the Lease's resourceVersion, so a concurrent change fails with 409 Conflict.
	GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error)
	CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error)
	UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error)

	// CreateTokenReview and CreateSubjectAccessReview ask the API server who a bearer token
	// is and what a user may do (the metrics endpoint's delegated auth).
	CreateTokenReview(ctx context.Context, tr *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error)
	CreateSubjectAccessReview(ctx context.Context, sar *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error)
}

// scheme holds only the types Interface sends and receives (plus meta/v1's Status, options
// and list types), not every API group.
var (
	scheme         = runtime.NewScheme()
	codecs         = serializer.NewCodecFactory(scheme)
	parameterCodec = runtime.NewParameterCodec(scheme)
)

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(policyv1.AddToScheme(scheme))
	utilruntime.Must(coordinationv1.AddToScheme(scheme))
	utilruntime.Must(authenticationv1.AddToScheme(scheme))
	utilruntime.Must(authorizationv1.AddToScheme(scheme))
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// Client implements Interface with one REST client per API group-version, sharing one HTTP
// client (connection pool) and one rate limiter, as the typed clientset does.
type Client struct {
	core, policy, coordination    *rest.RESTClient
	authentication, authorization *rest.RESTClient
}

var _ Interface = (*Client)(nil)

// NewClient returns a Client for cfg (from Config). cfg's QPS and Burst bound all requests
// together.
func NewClient(cfg *rest.Config) (*Client, error) {
	c := *cfg
	if c.UserAgent == "" {
		c.UserAgent = UserAgent
	}
	if c.RateLimiter == nil && c.QPS > 0 {
		if c.Burst <= 0 {
			return nil, fmt.Errorf("kubernetes client: burst must be positive when qps (%v) is", c.QPS)
		}
		c.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(c.QPS, c.Burst)
	}
	hc, err := rest.HTTPClientFor(&c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	out := &Client{}
	for _, g := range []struct {
		into    **rest.RESTClient
		apiPath string
		gv      schema.GroupVersion
	}{
		{&out.core, "/api", corev1.SchemeGroupVersion},
		{&out.policy, "/apis", policyv1.SchemeGroupVersion},
		{&out.coordination, "/apis", coordinationv1.SchemeGroupVersion},
		{&out.authentication, "/apis", authenticationv1.SchemeGroupVersion},
		{&out.authorization, "/apis", authorizationv1.SchemeGroupVersion},
	} {
		*g.into, err = restClient(&c, hc, g.apiPath, g.gv)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func restClient(cfg *rest.Config, hc *http.Client, apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := *cfg
	c.APIPath = apiPath
	c.GroupVersion = &gv
	c.NegotiatedSerializer = codecs.WithoutConversion()
	rc, err := rest.RESTClientForConfigAndClient(&c, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
	}
	return rc, nil
}

// GetNode implements Interface.
func (c *Client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := c.core.Get().Resource("nodes").Name(name).Do(ctx).Into(out)
	return out, err
}

// PatchNode implements Interface.
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := c.core.Patch(pt).Resource("nodes").Name(name).Body(data).Do(ctx).Into(out)
	return out, err
}

// PatchNodeStatus implements Interface.
func (c *Client) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := c.core.Patch(pt).Resource("nodes").Name(name).SubResource("status").Body(data).Do(ctx).Into(out)
	return out, err
}

// ListPods implements Interface.
func (c *Client) ListPods(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.PodList, error) {
	out := &corev1.PodList{}
	err := c.core.Get().Namespace(namespace).Resource("pods").VersionedParams(&opts, parameterCodec).Do(ctx).Into(out)
	return out, err
}

// EvictPod implements Interface.
func (c *Client) EvictPod(ctx context.Context, ev *policyv1.Eviction) error {
	return c.policy.Post().AbsPath("/api/v1").Namespace(ev.Namespace).Resource("pods").Name(ev.Name).
		SubResource("eviction").Body(ev).Do(ctx).Error()
}

// GetEvent implements Interface.
func (c *Client) GetEvent(ctx context.Context, namespace, name string) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := c.core.Get().Namespace(namespace).Resource("events").Name(name).Do(ctx).Into(out)
	return out, err
}

// CreateEvent implements Interface.
func (c *Client) CreateEvent(ctx context.Context, ev *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := c.core.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Into(out)
	return out, err
}

// PatchEvent implements Interface.
func (c *Client) PatchEvent(ctx context.Context, namespace, name string, pt types.PatchType, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := c.core.Patch(pt).Namespace(namespace).Resource("events").Name(name).Body(data).Do(ctx).Into(out)
	return out, err
}

// GetLease implements Interface.
func (c *Client) GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := c.coordination.Get().Namespace(namespace).Resource("leases").Name(name).Do(ctx).Into(out)
	return out, err
}

// CreateLease implements Interface.
func (c *Client) CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := c.coordination.Post().Namespace(l.Namespace).Resource("leases").Body(l).Do(ctx).Into(out)
	return out, err
}

// UpdateLease implements Interface.
func (c *Client) UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := c.coordination.Put().Namespace(l.Namespace).Resource("leases").Name(l.Name).Body(l).Do(ctx).Into(out)
	return out, err
}

// CreateTokenReview implements Interface.
func (c *Client) CreateTokenReview(ctx context.Context, tr *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
	out := &authenticationv1.TokenReview{}
	err := c.authentication.Post().Resource("tokenreviews").Body(tr).Do(ctx).Into(out)
	return out, err
}

// CreateSubjectAccessReview implements Interface.
func (c *Client) CreateSubjectAccessReview(ctx context.Context, sar *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error) {
	out := &authorizationv1.SubjectAccessReview{}
	err := c.authorization.Post().Resource("subjectaccessreviews").Body(sar).Do(ctx).Into(out)
	return out, err
}
