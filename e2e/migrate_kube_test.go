package e2e

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
)

const (
	drainNS        = "drain"
	drainNode      = "migrate-node"
	drainLockName  = "evictguard-migrate"
	drainLockSlot  = drainLockName + "-0"
	drainLockSpace = "kube-system"
)

// drainCluster is the real kube-apiserver with a Node and pods bound to it. No kubelet runs
// them: their status is written as a kubelet would (Running, Ready), and a stand-in kubelet
// finishes the deletion of a pod the API server marked for graceful deletion (after an
// eviction), as the kubelet does once the containers stopped. The disruption controller's
// part — a PodDisruptionBudget's status — is written by the test too.
type drainCluster struct {
	api *harness.APIServer
	c   kubernetes.Interface
}

func startDrainCluster(t *testing.T) *drainCluster {
	t.Helper()
	api := harness.StartAPIServer(t)
	d := &drainCluster{api: api, c: api.Client}
	ctx := context.Background()
	if _, err := d.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: drainNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager: the namespace's default ServiceAccount is created here.
	if _, err := d.c.CoreV1().ServiceAccounts(drainNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: drainNode}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, err := d.c.AppsV1().DaemonSets(drainNS).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	controller := true
	d.pod(t, "web-1", map[string]string{"app": "web"}, nil, nil, corev1.PodRunning)
	d.pod(t, "db-0", map[string]string{"app": "db"}, nil, nil, corev1.PodRunning)
	d.pod(t, "agent-x", map[string]string{"app": "agent"}, nil, []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet",
		Name: ds.Name, UID: ds.UID, Controller: &controller}}, corev1.PodRunning)
	d.pod(t, "static-"+drainNode, map[string]string{"app": "static"}, map[string]string{corev1.MirrorPodAnnotationKey: "hash"}, nil, corev1.PodRunning)
	d.pod(t, "job-done", map[string]string{"app": "job"}, nil, nil, corev1.PodSucceeded)
	// db-0's budget: at least one db pod available, and one is: no disruption allowed.
	minAvailable := intstr.FromInt32(1)
	pdb, err := d.c.PolicyV1().PodDisruptionBudgets(drainNS).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.pdbStatus(t, pdb.Name, 1, 0)
	return d
}

// pod creates a pod bound to drainNode and writes its status as the kubelet would.
func (d *drainCluster) pod(t *testing.T, name string, labels, annotations map[string]string, owners []metav1.OwnerReference, phase corev1.PodPhase) {
	t.Helper()
	ctx := context.Background()
	no := false
	p, err := d.c.CoreV1().Pods(drainNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations, OwnerReferences: owners},
		Spec: corev1.PodSpec{NodeName: drainNode, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	now := metav1.Now()
	p.Status = corev1.PodStatus{Phase: phase, StartTime: &now}
	if phase == corev1.PodRunning {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	}
	if _, err := d.c.CoreV1().Pods(drainNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of pod %s: %v", name, err)
	}
}

// pdbStatus writes what the disruption controller would: healthy pods and disruptions allowed.
func (d *drainCluster) pdbStatus(t *testing.T, name string, healthy, allowed int32) {
	t.Helper()
	ctx := context.Background()
	cur, err := d.c.PolicyV1().PodDisruptionBudgets(drainNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: cur.Generation, CurrentHealthy: healthy,
		DesiredHealthy: 1, ExpectedPods: healthy, DisruptionsAllowed: allowed}
	if _, err := d.c.PolicyV1().PodDisruptionBudgets(drainNS).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pdb status: %v", err)
	}
}

// kubelet finishes graceful deletions on drainNode until ctx ends, as the kubelet does once
// a pod's containers stopped.
func (d *drainCluster) kubelet(ctx context.Context, t *testing.T) {
	zero := int64(0)
	for ctx.Err() == nil {
		pods, err := d.c.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + drainNode})
		if err == nil {
			for _, p := range pods.Items {
				if p.DeletionTimestamp != nil {
					err := d.c.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
					if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
						t.Logf("stand-in kubelet: delete %s: %v", p.Name, err)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// drainState is what the test checks about the cluster: the pods on the node (with whether they
// are being deleted), cordon, and the migration Lease's holder.
type drainState struct {
	pods          map[string]bool // name → marked for deletion
	unschedulable bool
	holder        string
}

func (d *drainCluster) state(t *testing.T) drainState {
	t.Helper()
	ctx := context.Background()
	s := drainState{pods: map[string]bool{}}
	pods, err := d.c.CoreV1().Pods(drainNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		s.pods[p.Name] = p.DeletionTimestamp != nil
	}
	n, err := d.c.CoreV1().Nodes().Get(ctx, drainNode, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.unschedulable = n.Spec.Unschedulable
	l, err := d.c.CoordinationV1().Leases(drainLockSpace).Get(ctx, drainLockSlot, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		t.Fatal(err)
	case l.Spec.HolderIdentity != nil:
		s.holder = *l.Spec.HolderIdentity
	}
	return s
}

// watch samples the Lease holders and the cordon every 100 ms until the returned function is
// called, which returns the holders seen and whether the node was ever seen cordoned.
func (d *drainCluster) watch() func() ([]string, bool) {
	var (
		holders  []string
		cordoned bool
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			if l, err := d.c.CoordinationV1().Leases(drainLockSpace).Get(ctx, drainLockSlot, metav1.GetOptions{}); err == nil &&
				l.Spec.HolderIdentity != nil && !slices.Contains(holders, *l.Spec.HolderIdentity) {
				holders = append(holders, *l.Spec.HolderIdentity)
			}
			if n, err := d.c.CoreV1().Nodes().Get(ctx, drainNode, metav1.GetOptions{}); err == nil && n.Spec.Unschedulable {
				cordoned = true
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() ([]string, bool) {
		close(stop)
		wg.Wait()
		return holders, cordoned
	}
}

// TestMigrateKubernetesAware runs `evictguard migrate --drain --lock-slots 1` (a real dockerd
// data-root move under the sandboxed systemd) against a real kube-apiserver with pods bound
// to the node, through the product's own API client:
//
//  1. A PodDisruptionBudget (minAvailable 1, no disruption allowed) protects db-0: the drain
//     evicts web-1 through the Eviction API, leaves DaemonSet, mirror and finished pods
//     alone, waits for db-0 until --drain-timeout and reports the budget; the migration is
//     rolled back: the node it cordoned is uncordoned, the Lease (held by the node while it
//     ran) released, the data left on the old root.
//  2. The budget now allows one disruption and the node was cordoned by an operator before:
//     the drain evicts db-0 (the API server spends the budget), the migration completes, the
//     node stays cordoned, the Lease is released.
func TestMigrateKubernetesAware(t *testing.T) {
	d := startDrainCluster(t)
	m := startDockerMigration(t, 96<<20, 160<<20)
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	kctx, stopKubelet := context.WithCancel(context.Background())
	var kwg sync.WaitGroup
	kwg.Add(1)
	go func() { defer kwg.Done(); d.kubelet(kctx, t) }()
	t.Cleanup(func() { stopKubelet(); kwg.Wait() })
	args := func(timeout string) []string {
		return m.args("--to", to, "--drain", "--drain-timeout", timeout, "--kubeconfig", d.api.Kubeconfig, "--node-name", drainNode,
			"--lock-slots", "1", "--lock-namespace", drainLockSpace, "--lock-name", drainLockName, "--lock-ttl", "5m")
	}
	run := func(timeout string, extra ...string) (string, string, int, []string, bool) {
		seen := d.watch()
		out, errOut, code := runEvictguardEnv(t, nil, append(args(timeout), extra...)...)
		holders, cordoned := seen()
		return out, errOut, code, holders, cordoned
	}

	// 1. Blocked by the budget.
	before, beforeLines := dataDigestLines(t, from)
	out, errOut, code, holders, cordoned := run("8s")
	t.Logf("migrate (blocked): exit %d\n%s\n%s", code, out, errOut)
	if code == 0 {
		t.Fatal("the migration succeeded although a PodDisruptionBudget forbids evicting db-0")
	}
	for _, want := range []string{"drain", "PodDisruptionBudget", drainNS + "/db-0", "rolled back"} {
		if !strings.Contains(errOut+out, want) {
			t.Errorf("the failure does not mention %q", want)
		}
	}
	if !slices.Equal(holders, []string{drainNode}) {
		t.Errorf("Lease %s/%s holders seen while migrating: %q, want [%s]", drainLockSpace, drainLockSlot, holders, drainNode)
	}
	if !cordoned {
		t.Error("the node was never seen cordoned while draining")
	}
	s := d.state(t)
	if s.unschedulable {
		t.Error("the node evictguard cordoned is still cordoned after the rollback")
	}
	if s.holder != "" {
		t.Errorf("Lease still held by %q after the rollback", s.holder)
	}
	wantPods := map[string]bool{"db-0": false, "agent-x": false, "static-" + drainNode: false, "job-done": false}
	if !maps.Equal(s.pods, wantPods) {
		t.Errorf("pods after the blocked drain (name → being deleted): %v, want %v (web-1 evicted, db-0 kept by its budget, DaemonSet/mirror/finished pods left)", s.pods, wantPods)
	}
	assertSameData(t, from, before, beforeLines)
	m.checkIntact(t, from)

	// 2. The budget allows one disruption; an operator cordoned the node beforehand.
	d.pdbStatus(t, "db", 2, 1)
	if _, err := d.c.CoreV1().Nodes().Patch(context.Background(), drainNode, types.StrategicMergePatchType,
		[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The same migration is not started again by a plain re-run (a restart policy would loop
	// on it): the operator says --retry.
	out, errOut, code = runEvictguardEnv(t, nil, args("2m")...)
	if code != 2 || !strings.Contains(errOut, "rolled-back") || !strings.Contains(errOut, "--retry") {
		t.Errorf("re-run after the rollback: exit %d, want 2 naming the rolled-back operation and --retry\n%s\n%s", code, out, errOut)
	}
	out, errOut, code, holders, _ = run("2m", "--retry")
	t.Logf("migrate --retry (allowed): exit %d\n%s\n%s", code, out, errOut)
	if code != 0 {
		t.Fatalf("migrate: exit %d", code)
	}
	if !slices.Equal(holders, []string{drainNode}) {
		t.Errorf("Lease holders seen while migrating: %q, want [%s]", holders, drainNode)
	}
	s = d.state(t)
	if !s.unschedulable {
		t.Error("the node an operator cordoned was uncordoned by the migration")
	}
	if s.holder != "" {
		t.Errorf("Lease still held by %q after the migration", s.holder)
	}
	wantPods = map[string]bool{"agent-x": false, "static-" + drainNode: false, "job-done": false}
	if !maps.Equal(s.pods, wantPods) {
		t.Errorf("pods after the drain: %v, want %v", s.pods, wantPods)
	}
	pdb, err := d.c.PolicyV1().PodDisruptionBudgets(drainNS).Get(context.Background(), "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pdb.Status.DisruptionsAllowed != 0 {
		t.Errorf("PodDisruptionBudget db allows %d disruptions after the eviction, want 0 (the eviction spent it)", pdb.Status.DisruptionsAllowed)
	}
	assertSameData(t, to, before, beforeLines)
	m.checkIntact(t, to)

	j, err := journal.Open("/", m.stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := j.List()
	if err != nil {
		t.Fatal(err)
	}
	var last *journal.Operation
	for _, op := range ops {
		if last == nil || op.Started.After(last.Started) {
			last = op
		}
	}
	if last == nil || last.State != journal.StateDone {
		t.Fatalf("journal: %+v", ops)
	}
	notes := map[string]string{}
	for _, h := range last.History {
		notes[h.Step] = h.Note
		t.Logf("  %-14s %s", h.Step, h.Note)
	}
	for step, want := range map[string]string{migration.StepLease: "holding " + drainLockSpace + "/" + drainLockSlot,
		migration.StepCordon: "already cordoned", migration.StepDrain: "drained", migration.StepUncordon: "left as it was",
		migration.StepRelease: "released"} {
		if !strings.Contains(notes[step], want) {
			t.Errorf("journal step %s: %q, want …%s…", step, notes[step], want)
		}
	}
}
