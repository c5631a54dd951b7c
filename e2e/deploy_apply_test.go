package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/evictguard/evictguard/deploy"
	"github.com/evictguard/evictguard/e2e/harness"
)

// prometheusOperatorCRDs are minimal CustomResourceDefinitions for the two Prometheus
// Operator kinds evictguard ships (ServiceMonitor, PrometheusRule), written here rather than
// downloaded: group, versions, names and scope as the operator defines them, with the spec
// left schemaless (x-kubernetes-preserve-unknown-fields). The dry-run therefore proves the
// objects are accepted by the real API server under those kinds, not the operator's full
// OpenAPI validation of their spec; deploy/rules_test.go checks the rules with promtool.
func prometheusOperatorCRDs() []map[string]any {
	crd := func(kind, plural string) map[string]any {
		return map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": plural + ".monitoring.coreos.com"},
			"spec": map[string]any{
				"group": "monitoring.coreos.com", "scope": "Namespaced",
				"names": map[string]any{"kind": kind, "plural": plural, "singular": strings.ToLower(kind), "listKind": kind + "List"},
				"versions": []any{map[string]any{
					"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{
						"type": "object",
						"properties": map[string]any{
							"spec": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
						},
					}},
				}},
			},
		}
	}
	return []map[string]any{crd("ServiceMonitor", "servicemonitors"), crd("PrometheusRule", "prometheusrules")}
}

type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, a *harness.APIServer) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(a.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(a.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply server-side-applies o; dryRun sends dryRun=All, so admission and validation run in
// full and nothing is stored.
func (ap *applier) apply(ctx context.Context, o map[string]any, dryRun bool) error {
	u := &unstructured.Unstructured{Object: o}
	gvk := u.GroupVersionKind()
	m, err := ap.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		ap.mapper.Reset()
		m, err = ap.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	var ri dynamic.ResourceInterface = ap.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = ap.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: "evictguard-e2e", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Apply(ctx, u.GetName(), u, opts)
	return err
}

// applyIdentity applies the identity objects of rendered manifests — Namespace,
// ServiceAccount, RBAC and the admission policy — and returns the others, unapplied.
func (ap *applier) applyIdentity(t *testing.T, objs []deploy.Object) []deploy.Object {
	t.Helper()
	var rest []deploy.Object
	for _, o := range objs {
		switch o["kind"] {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			if err := ap.apply(t.Context(), o, false); err != nil {
				t.Fatalf("apply %s: %v", deploy.Key(o), err)
			}
		default:
			rest = append(rest, o)
		}
	}
	return rest
}

// remediationValues switch the chart to the remediation variant (the overlay's objects).
var remediationValues = map[string]any{"remediation": map[string]any{"enabled": true}}

// TestDeployManifestsServerSideDryRun applies the kustomize base, the remediation overlay and
// the rendered Helm chart (default values and remediation.enabled, each in the default and
// another namespace) to the real kube-apiserver with server-side apply and dryRun=All. Only Namespaces and the two Prometheus Operator
// CRDs are created for real (a namespaced dry-run needs its namespace to exist).
func TestDeployManifestsServerSideDryRun(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	ctx := context.Background()
	a := harness.StartAPIServer(t)
	ap := newApplier(t, a)
	for _, crd := range prometheusOperatorCRDs() {
		if err := ap.apply(ctx, crd, false); err != nil {
			t.Fatalf("install CRD: %v", err)
		}
	}
	err := waitCondition(ctx, 30*time.Second, func() error {
		ap.mapper.Reset()
		for _, gk := range []schema.GroupKind{{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}, {Group: "monitoring.coreos.com", Kind: "PrometheusRule"}} {
			if _, err := ap.mapper.RESTMapping(gk, "v1"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("CRDs not served: %v", err)
	}
	t.Log("ServiceMonitor and PrometheusRule CRDs: minimal, schemaless spec (see prometheusOperatorCRDs)")

	sets := []struct {
		name   string
		render func() ([]deploy.Object, error)
	}{
		{"kustomize base", func() ([]deploy.Object, error) { return deploy.Kustomize("../deploy/kubernetes/base") }},
		{"kustomize overlays/remediation", func() ([]deploy.Object, error) {
			return deploy.Kustomize("../deploy/kubernetes/overlays/remediation")
		}},
		{"helm chart (defaults, namespace evictguard)", func() ([]deploy.Object, error) {
			return deploy.Helm("../deploy/helm/evictguard", "evictguard", "evictguard", nil)
		}},
		{"helm chart (namespace monitoring)", func() ([]deploy.Object, error) {
			return deploy.Helm("../deploy/helm/evictguard", "eg", "monitoring", nil)
		}},
		{"helm chart (remediation.enabled, namespace evictguard)", func() ([]deploy.Object, error) {
			return deploy.Helm("../deploy/helm/evictguard", "evictguard", "evictguard", remediationValues)
		}},
		{"helm chart (remediation.enabled, namespace monitoring)", func() ([]deploy.Object, error) {
			return deploy.Helm("../deploy/helm/evictguard", "eg", "monitoring", remediationValues)
		}},
	}
	for _, ns := range []string{"evictguard", "monitoring"} {
		if _, err := a.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, s := range sets {
		objs, err := s.render()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[fmt.Sprint(o["kind"])]++
			if err := ap.apply(ctx, o, true); err != nil {
				t.Errorf("%s: dry-run apply %s: %v", s.name, deploy.Key(o), err)
			}
		}
		for _, k := range []string{"DaemonSet", "ServiceAccount", "ClusterRole", "ConfigMap", "Service", "ServiceMonitor", "PrometheusRule", "ValidatingAdmissionPolicy"} {
			if kinds[k] == 0 {
				t.Errorf("%s: no %s rendered", s.name, k)
			}
		}
		t.Logf("%s: %d objects accepted by kube-apiserver (dry-run): %v", s.name, len(objs), kinds)
	}
	// Nothing but the namespaces and CRDs was stored.
	if _, err := a.Client.AppsV1().DaemonSets("evictguard").Get(ctx, "evictguard", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("DaemonSet stored by a dry-run: %v", err)
	}
}

// TestDeployAdmissionPolicyOwnNode installs the base's RBAC and ValidatingAdmissionPolicy for
// real and shows the policy doing what RBAC cannot: with a token bound to a pod on node A,
// the evictguard ServiceAccount may patch node A's status but not node B's, and may post an
// Event about A but not about B; a token bound to no pod is refused outright.
func TestDeployAdmissionPolicyOwnNode(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	ctx := context.Background()
	a := harness.StartAPIServer(t)
	ap := newApplier(t, a)
	objs, err := deploy.Kustomize("../deploy/kubernetes/base")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o["kind"] {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			if err := ap.apply(ctx, o, false); err != nil {
				t.Fatalf("apply %s: %v", deploy.Key(o), err)
			}
		}
	}
	for _, n := range []string{"node-a", "node-b"} {
		if _, err := a.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod, err := a.Client.CoreV1().Pods("evictguard").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "evictguard-a"},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "evictguard", AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "evictguard", Image: "evictguard:e2e"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := func(bound bool) kubernetes.Interface {
		spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}
		if bound {
			spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
		}
		tr, err := a.Client.CoreV1().ServiceAccounts("evictguard").CreateToken(ctx, "evictguard",
			&authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest: %v", err)
		}
		c, err := kubernetes.NewForConfig(a.TokenConfig(tr.Status.Token))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	patch := []byte(`{"status":{"conditions":[{"type":"EvictionPredicted","status":"False","reason":"e2e","message":"e2e","lastHeartbeatTime":"2026-01-01T00:00:00Z","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`)
	event := func(node string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-", Namespace: "default"},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, APIVersion: "v1"}, Reason: "E2E", Message: "e2e", Type: "Normal",
			Source: corev1.EventSource{Component: "evictguard"}}
	}
	// The policy becomes active asynchronously: retry until the foreign write is refused.
	sa := token(true)
	err = waitCondition(ctx, 30*time.Second, func() error {
		_, err := sa.CoreV1().Nodes().Patch(ctx, "node-b", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			return fmt.Errorf("patch node-b status from a pod on node-a: err = %w, want denied", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("patch own node status: %v", err)
	}
	// A status patch carries metadata and other conditions too: only evictguard's own may change.
	for _, tc := range []struct {
		name, patch string
		allowed     bool
	}{
		{"own annotation through the status", `{"metadata":{"annotations":{"evictguard.dev/headroom":"{}"}},"status":{"conditions":[{"type":"EvictionPredicted","status":"False","reason":"e2e"}]}}`, true},
		{"a label through the status", `{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`, false},
		{"another annotation through the status", `{"metadata":{"annotations":{"example.com/x":"y"}}}`, false},
		{"the kubelet's Ready condition", `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"e2e"}]}}`, false},
		{"capacity", `{"status":{"capacity":{"cpu":"64"}}}`, false},
	} {
		_, err := sa.CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType, []byte(tc.patch), metav1.PatchOptions{}, "status")
		if tc.allowed && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.allowed && (err == nil || !strings.Contains(err.Error(), "evictguard may change only")) {
			t.Errorf("%s: err = %v, want denied by evictguard-own-node", tc.name, err)
		}
	}
	if _, err := sa.CoreV1().Events("default").Create(ctx, event("node-a"), metav1.CreateOptions{}); err != nil {
		t.Errorf("Event about own node: %v", err)
	}
	_, err = sa.CoreV1().Events("default").Create(ctx, event("node-b"), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "own Node") {
		t.Errorf("Event about node-b: err = %v, want denied by evictguard-own-node", err)
	}
	_, err = token(false).CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err == nil || !strings.Contains(err.Error(), "not bound to a pod") {
		t.Errorf("unbound token: err = %v, want denied", err)
	}
	b, _ := json.Marshal(map[string]any{"policy": "evictguard-own-node"})
	t.Logf("%s enforced: own node allowed, foreign node and unbound token denied", b)
}

func waitCondition(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	for {
		if err = f(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
