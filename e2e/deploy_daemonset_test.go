package e2e

import (
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/evictguard/evictguard/deploy"
	"github.com/evictguard/evictguard/e2e/harness"
)

// TestDeployDaemonSetPodSpec runs the monitor-only DaemonSet's container as the kubelet
// would, minus the container: the binary with the pod spec's args and env, the ConfigMap's
// config.yaml as the file --config names, and a /host-like host root. It talks to the real
// kube-apiserver as the ServiceAccount of the base, with a token bound to a pod on the node
// and the base's ValidatingAdmissionPolicy enforced, and must put its condition on its own
// Node. What differs from a pod, and why:
//   - --config and --host-root point at temp dirs (the pod's /etc/evictguard and /host);
//   - --listen 127.0.0.1:<free port> is appended (a flag set on the command line wins over
//     the file's ":9847", which parallel tests would share);
//   - --kubeconfig is appended with the bound token (in-cluster config reads fixed paths
//     under /var/run/secrets, which the test must not write on the machine).
func TestDeployDaemonSetPodSpec(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	ctx := context.Background()
	a := harness.StartAPIServer(t)
	ap := newApplier(t, a)
	objs, err := deploy.Kustomize("../deploy/kubernetes/base")
	if err != nil {
		t.Fatal(err)
	}
	var ds, cm *unstructured.Unstructured
	for _, o := range ap.applyIdentity(t, objs) {
		switch o["kind"] {
		case "DaemonSet":
			ds = &unstructured.Unstructured{Object: o}
		case "ConfigMap":
			cm = &unstructured.Unstructured{Object: o}
		}
	}
	if ds == nil || cm == nil {
		t.Fatal("base has no DaemonSet or ConfigMap")
	}
	cfgText, _, _ := unstructured.NestedString(cm.Object, "data", "config.yaml")
	cs, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	c := cs[0].(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}

	const node = "node-a"
	if _, err := a.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := a.Client.CoreV1().Pods("evictguard").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "evictguard-" + node},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "evictguard", AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "evictguard", Image: "evictguard:e2e"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := a.Client.CoreV1().ServiceAccounts("evictguard").CreateToken(ctx, "evictguard", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	dir := harness.TempDir(t, "daemonset-pod")
	host := filepath.Join(dir, "host") // the pod's /host: a node with /var/lib/kubelet and no kubelet running
	for _, d := range []string{"var/lib/kubelet", "etc", "var/log"} {
		if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(dir, "etc-evictguard") // the pod's /etc/evictguard (the ConfigMap)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "config.yaml"), []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(harness.KubeconfigFor(a.URL, tr.Status.Token)), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--config=/etc/evictguard/"):
			args[i] = "--config=" + filepath.Join(etc, strings.TrimPrefix(a, "--config=/etc/evictguard/"))
		case a == "--host-root=/host":
			args[i] = "--host-root=" + host
		}
	}
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	args = append(args, "--listen", listen, "--kubeconfig", kubeconfig)
	env := []string{}
	for _, e := range c["env"].([]any) {
		e := e.(map[string]any)
		if e["name"] == "NODE_NAME" {
			env = append(env, "NODE_NAME="+node) // fieldRef spec.nodeName
		}
	}
	if len(env) != 1 {
		t.Fatalf("the pod spec does not set NODE_NAME from the downward API: %v", c["env"])
	}
	t.Logf("running the DaemonSet's container: evictguard %s (env %v)", strings.Join(args, " "), env)
	p := harness.Start(t, dir, "evictguard", env, evictguardBinary(t), args...)
	err = harness.WaitFor(ctx, 60*time.Second, p, func() error {
		b, code, err := httpGetCode("http://" + listen + "/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz %d: %s", code, b)
		}
		n, err := a.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == "EvictionPredicted" {
				return nil
			}
		}
		return errors.New("no EvictionPredicted condition on the pod's own node yet")
	})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, p.LogTail(4000))
	}
	if strings.Contains(p.Log(), "evictguard-own-node") {
		t.Errorf("the admission policy refused a write of the daemon on its own node:\n%s", p.LogTail(4000))
	}
	// The file's settings are in force (10s interval from the ConfigMap), the flag's listen won.
	if !strings.Contains(p.Log(), "interval=10s") {
		t.Errorf("the ConfigMap's monitor.interval (10s) is not in force:\n%s", p.LogTail(3000))
	}

	// What the ServiceAccount may patch on a Node: its own node's evictguard.dev/ annotations
	// (the log budget), nothing else of it, nothing of another node.
	if _, err := a.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(a.TokenConfig(tr.Status.Token))
	if err != nil {
		t.Fatal(err)
	}
	// The API server enforces a new policy once it has loaded and compiled it.
	err = harness.WaitFor(ctx, 30*time.Second, nil, func() error {
		_, err := sa.CoreV1().Nodes().Patch(ctx, "node-b", types.MergePatchType, []byte(`{"metadata":{"annotations":{"evictguard.dev/probe":"1"}}}`), metav1.PatchOptions{})
		if err == nil {
			return errors.New("the admission policy is not enforced yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, node, patch string
		allowed           bool
	}{
		{"own node, evictguard annotation", node, `{"metadata":{"annotations":{"evictguard.dev/log-budget-bytes":"123"}}}`, true},
		{"own node, another annotation", node, `{"metadata":{"annotations":{"example.com/x":"1"}}}`, false},
		{"own node, a label", node, `{"metadata":{"labels":{"example.com/x":"1"}}}`, false},
		{"own node, the spec", node, `{"spec":{"unschedulable":true}}`, false},
		{"another node, evictguard annotation", "node-b", `{"metadata":{"annotations":{"evictguard.dev/log-budget-bytes":"123"}}}`, false},
	} {
		_, err := sa.CoreV1().Nodes().Patch(ctx, tc.node, types.MergePatchType, []byte(tc.patch), metav1.PatchOptions{})
		if (err == nil) != tc.allowed {
			t.Errorf("%s: patch %s: err = %v, want allowed=%v", tc.name, tc.patch, err, tc.allowed)
		}
	}
}
