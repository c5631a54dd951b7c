package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/evictguard/evictguard/deploy"
	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
)

// remediationObjects renders the remediation overlay for the pod node: its own config (the
// migration allowed to n.target, gates a test can pass, this node's kubelet health URL, a
// state dir of the test's), the sandboxed manager's bus where the node's system bus is
// mounted, and env for the pod (test hooks passed on to the host unit).
func (n *podNode) remediationObjects(t *testing.T, stateDir string, env map[string]string) []deploy.Object {
	t.Helper()
	return n.remediationObjectsWith(t, stateDir, env, func(cfg map[string]any) {
		cfg["policy"].(map[string]any)["migration"] = map[string]any{"to": filepath.Join(n.target, "containerd"), "runtime": "containerd",
			"config": n.c.ConfigPath, "units": []string{"containerd.service"}}
	}, nil)
}

// remediationObjectsWith is remediationObjects with the config changed by edit and the
// node paths in rw also mounted read-write (as the overlay does for /var/lib/kubelet).
func (n *podNode) remediationObjectsWith(t *testing.T, stateDir string, env map[string]string, edit func(cfg map[string]any), rw []string) []deploy.Object {
	t.Helper()
	bus := strings.TrimPrefix(n.sd.BusAddress, "unix:path=")
	objs, err := deploy.Kustomize("../deploy/kubernetes/overlays/remediation")
	if err != nil {
		t.Fatal(err)
	}
	patched := 0
	defer func() {
		if patched != 2 {
			t.Fatalf("patched %d of the overlay's ConfigMap and DaemonSet", patched)
		}
	}()
	for _, o := range objs {
		switch deploy.Key(o) {
		case "v1 ConfigMap evictguard/evictguard-config":
			data := o["data"].(map[string]any)
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(data["config.yaml"].(string)), &cfg); err != nil {
				t.Fatal(err)
			}
			mon := cfg["monitor"].(map[string]any)
			mon["interval"] = "2s"
			mon["historyFile"] = filepath.Join(stateDir, "fill-history.json")
			delete(mon, "configz") // the harness kubelet serves elsewhere; not needed to migrate
			pol := cfg["policy"].(map[string]any)
			pol["minKubeletUptime"] = "1s"
			pol["stableFor"] = "2s"
			act := cfg["actions"].(map[string]any)
			act["stateDir"] = stateDir
			act["healthz"] = n.k.HealthzURL()
			act["systemdBus"] = "unix:path=/host" + bus
			edit(cfg)
			b, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			data["config.yaml"] = string(b)
			patched++
		case "apps/v1 DaemonSet evictguard/evictguard":
			spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			// The sandbox has no /run/dbus/system_bus_socket for the mount point under the
			// read-only /host: its manager's socket is mounted where it is.
			for _, v := range spec["volumes"].([]any) {
				v := v.(map[string]any)
				if v["name"] == "host-dbus" {
					v["hostPath"] = map[string]any{"path": bus, "type": "Socket"}
				}
			}
			spec["volumes"] = append(spec["volumes"].([]any), map[string]any{"name": "test-state",
				"hostPath": map[string]any{"path": stateDir, "type": "Directory"}})
			c := spec["containers"].([]any)[0].(map[string]any)
			for i, p := range rw {
				name := fmt.Sprintf("test-rw-%d", i)
				spec["volumes"] = append(spec["volumes"].([]any), map[string]any{"name": name,
					"hostPath": map[string]any{"path": p, "type": "Directory"}})
				c["volumeMounts"] = append(c["volumeMounts"].([]any), map[string]any{"name": name, "mountPath": "/host" + p})
			}
			for _, m := range c["volumeMounts"].([]any) {
				m := m.(map[string]any)
				if m["name"] == "host-dbus" {
					m["mountPath"] = "/host" + bus
				}
			}
			c["volumeMounts"] = append(c["volumeMounts"].([]any), map[string]any{"name": "test-state", "mountPath": "/host" + stateDir})
			envs, _ := c["env"].([]any)
			for k, v := range env {
				envs = append(envs, map[string]any{"name": k, "value": v})
			}
			c["env"] = envs
			patched++
		}
	}
	return objs
}

// evictguardPIDs are the host PIDs of the pods' `evictguard run` processes.
func evictguardPIDs() []int {
	return harness.Processes(func(_ int, argv []string) bool {
		return len(argv) >= 3 && argv[0] == "/usr/local/bin/evictguard" && argv[1] == "run" && argv[2] == "--config=/etc/evictguard/config.yaml"
	})
}

// TestRemediationPodMigratesContainerd: the remediation DaemonSet's pod, on a real kubelet
// whose containerd keeps its root on nodefs, moves that root to another disk when nodefs
// enters warning (by its prediction). The work runs as the operation's unit on the host: the
// pod's process is SIGKILLed at the pre-copy and the restarted container adopts the running
// operation; the migration's stop takes the pod down with containerd, and the pod is deleted
// in that stopped window; the DaemonSet's next pod, once the kubelet is back, reports the
// outcome. One operation, done; every image there; a pod Ready again.
func TestRemediationPodMigratesContainerd(t *testing.T) {
	t.Parallel()
	n := startPodNodeWith(t, podNodeOptions{RuntimeOnNodefs: true, NodefsSize: 320 << 20, TargetSize: 256 << 20})
	ctx := t.Context()
	ref := imageRef(t)
	from, to := filepath.Join(n.nodefs, "containerd"), filepath.Join(n.target, "containerd")
	stateDir := harness.TempDir(t, "evictguard-state")
	holds := harness.TempDir(t, "holds")
	hold := func(step string) string { return filepath.Join(holds, step) }
	release := func(step string) {
		if err := os.WriteFile(hold(step), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"EVICTGUARD_TEST_HOLD_AFTER": migration.StepPrecopy + "=" + hold(migration.StepPrecopy) + "," +
		migration.StepStop + "=" + hold(migration.StepStop)}
	n.applyObjects(t, n.remediationObjects(t, stateDir, env))
	pod := n.waitReadyPod(t, ref, 120*time.Second)
	imagesBefore := n.c.Ctr(t, "images", "ls", "-q")
	t.Logf("remediation pod %s Ready; images: %s", pod.Name, strings.Fields(imagesBefore))

	// nodefs into warning by its prediction, not its margin: ~94 MiB above the threshold at
	// 32 KiB/s is 50 minutes, inside the 1 hour warning horizon, and leaves room for the
	// containers the kubelet creates again (the native snapshotter copies the image for each).
	n.fill = fillScenarioOn(t, n.nodefs, n.k.ConfigPath, 3000*time.Second, 32<<10)
	stopWriter := n.fill.StartWriterAt(t, 32<<10)
	defer stopWriter()
	filled := time.Now()

	diag := func() string { return "pods' logs:\n" + n.podLog(t) }
	op := waitOp(t, stateDir, migration.StepPrecopy, 2*time.Minute, diag)
	t.Logf("operation %s begun %s after the writer started (nodefs in warning by its prediction); held after the pre-copy", op.ID, time.Since(filled).Round(100*time.Millisecond))
	conn := n.sd.Conn(t)
	unit := hostexec.UnitName(op.ID)
	if s := unitLoadState(t, conn, unit); s != "loaded" {
		t.Fatalf("%s: LoadState %s", unit, s)
	}

	// 1. At the pre-copy, SIGKILL of the pod's process: the kubelet restarts the container,
	// which adopts the running operation.
	pids := evictguardPIDs()
	if len(pids) != 1 {
		t.Fatalf("evictguard run processes: %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n.waitPodLog(t, "adopting the data-root migration running on the host", 90*time.Second)
	t.Logf("SIGKILLed pid %d; the restarted container adopted %s", pids[0], unit)
	release(migration.StepPrecopy)

	// 2. In the stopped window (kubelet and containerd stopped, the pods' sandboxes with
	// them), the pod is deleted: the API server marks it, the kubelet finishes it when it is
	// back, and the DaemonSet's next pod finds the operation.
	waitOp(t, stateDir, migration.StepStop, time.Minute, diag)
	if err := n.a.Client.CoreV1().Pods("evictguard").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if pids := evictguardPIDs(); len(pids) != 0 {
		t.Errorf("evictguard run processes in the stopped window: %v", pids)
	}
	t.Logf("deleted pod %s in the stopped window", pod.Name)
	release(migration.StepStop)

	// 3. The stop takes the pods down with containerd; afterwards a pod reports the outcome.
	var done *journal.Operation
	err := harness.WaitFor(ctx, 4*time.Minute, nil, func() error {
		ops := journalOps(t, stateDir)
		if len(ops) != 1 {
			return fmt.Errorf("%d operations", len(ops))
		}
		if ops[0].State == journal.StateInProgress || ops[0].Reported == nil {
			return fmt.Errorf("operation %s after step %s, reported %v", ops[0].State, ops[0].Step, ops[0].Reported)
		}
		done = ops[0]
		return nil
	})
	if err != nil {
		t.Fatalf("%v\npods' logs:\n%s\nunit output:\n%s", err, n.podLog(t), tail(readFile(filepath.Join(stateDir, "ops", op.ID, "output.log")), 4000))
	}
	if done.State != journal.StateDone {
		t.Fatalf("operation %s: %s\nunit output:\n%s", done.ID, done.State, readFile(filepath.Join(stateDir, "ops", op.ID, "output.log")))
	}
	for _, h := range done.History {
		t.Logf("  %-13s %s  %s", h.Step, h.At.Format("15:04:05.000"), h.Note)
	}
	if s := unitLoadState(t, conn, unit); s != "not-found" {
		t.Errorf("%s: LoadState %s after the operation", unit, s)
	}
	if got := n.c.Ctr(t, "images", "ls", "-q"); got != imagesBefore {
		t.Errorf("images after: %q, before: %q", got, imagesBefore)
	}
	if _, err := os.Stat(from); !os.IsNotExist(err) {
		t.Errorf("the old root %s is still there", from)
	}
	if _, err := os.Stat(filepath.Join(to, "io.containerd.content.v1.content")); err != nil {
		t.Errorf("the new root: %v", err)
	}
	last := n.waitReadyPod(t, ref, 120*time.Second)
	if last.Name == pod.Name {
		t.Errorf("the deleted pod %s is Ready again", pod.Name)
	}
	if err := waitNodeCondition(n.a, n.k, podNodeName, corev1.NodeReady); err != nil {
		t.Errorf("node after the migration: %v", err)
	}
	// The outcome as a Node Event, from a pod (with the ServiceAccount's token).
	err = harness.WaitFor(ctx, 60*time.Second, nil, func() error {
		l, err := n.a.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range l.Items {
			if strings.HasPrefix(e.Reason, "DataRootMigra") && strings.Contains(e.Message, done.ID) {
				t.Logf("Event %s: %s", e.Reason, e.Message)
				if e.Reason != "DataRootMigrated" && e.Reason != "DataRootMigrationRecovered" {
					return fmt.Errorf("event %s", e.Reason)
				}
				return nil
			}
		}
		return errors.New("no DataRootMigrat* Event for the operation")
	})
	if err != nil {
		t.Errorf("%v\npods' logs:\n%s", err, n.podLog(t))
	}
	t.Logf("pod %s Ready on the new root", last.Name)
}

// waitPodLog waits until some evictguard container's log on the node has s.
func (n *podNode) waitPodLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(t.Context(), timeout, nil, func() error {
		if strings.Contains(n.podLog(t), s) {
			return nil
		}
		return fmt.Errorf("no %q in the pods' logs", s)
	})
	if err != nil {
		pods, _ := n.daemonPods(context.Background())
		var st []string
		for _, p := range pods {
			st = append(st, fmt.Sprintf("%s %s %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses))
		}
		t.Fatalf("%v\n%s\npods: %s\n%s", err, n.podLog(t), st, n.describe(t))
	}
}

// TestRemediationPodRestartsKubelet: the remediation DaemonSet's pod lowers a threshold the
// node has no headroom left under — it writes the kubelet's configuration file through
// /host, restarts kubelet.service over the node's D-Bus and verifies against /configz after
// the restart — and keeps running through the kubelet's restart (same container, no
// restart), reporting the change as a Node Event.
func TestRemediationPodRestartsKubelet(t *testing.T) {
	t.Parallel()
	n := startPodNodeWith(t, podNodeOptions{UnitsInEtc: true})
	ctx := t.Context()
	ref := imageRef(t)
	stateDir := harness.TempDir(t, "evictguard-state")
	objs := n.remediationObjectsWith(t, stateDir, nil, func(cfg map[string]any) {
		cfg["monitor"].(map[string]any)["configz"] = map[string]any{"url": n.k.ConfigzURL(),
			"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}
		cfg["policy"].(map[string]any)["signals"] = []string{"nodefs.available"}
	}, []string{filepath.Dir(n.k.ConfigPath)})
	n.applyObjects(t, objs)
	pod := n.waitReadyPod(t, ref, 120*time.Second)
	before := pod.Status.ContainerStatuses[0]
	hard, err := n.k.EvictionHard()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s Ready; /configz evictionHard %v", pod.Name, hard)

	// Headroom under nodefs.available<10% down to ~2 % of the disk: below the policy's 3 %
	// target, so the pass lowers the threshold (the floor is 5 %).
	extra := n.fill.Available(t) - n.fill.Threshold - n.fill.Capacity*2/100
	if err := os.WriteFile(filepath.Join(n.fill.RootDir, "fill"), make([]byte, extra), 0o644); err != nil {
		t.Fatal(err)
	}
	filled := time.Now()
	var op *journal.Operation
	err = harness.WaitFor(ctx, 3*time.Minute, nil, func() error {
		ops := journalOps(t, stateDir)
		if len(ops) == 0 {
			return errors.New("no operation")
		}
		op = ops[len(ops)-1]
		if op.State == journal.StateInProgress {
			return fmt.Errorf("operation %s after step %s", op.ID, op.Step)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\npods' logs:\n%s", err, n.podLog(t))
	}
	if op.Kind != journal.KindThresholdRewrite || op.State != journal.StateDone {
		t.Fatalf("operation %s: %s %s\npods' logs:\n%s", op.ID, op.Kind, op.State, n.podLog(t))
	}
	var restarted, verified time.Time
	for _, h := range op.History {
		t.Logf("  %-8s %s  %s", h.Step, h.At.Format("15:04:05.000"), h.Note)
		switch h.Step {
		case "restart":
			restarted = h.At
		case "verify":
			verified = h.At
		}
	}
	if restarted.IsZero() || !verified.After(restarted) {
		t.Errorf("verify at %s, restart at %s: the verification must follow the restart", verified, restarted)
	}
	t.Logf("threshold rewrite done %s after the fill", time.Since(filled).Round(100*time.Millisecond))
	got, err := n.k.EvictionHard()
	if err != nil {
		t.Fatal(err)
	}
	if got["nodefs.available"] == hard["nodefs.available"] {
		t.Errorf("/configz nodefs.available still %s", got["nodefs.available"])
	}
	t.Logf("/configz evictionHard after: %v", got)
	// The pod lived through the kubelet's restart: same container, no restart.
	p, err := n.a.Client.CoreV1().Pods("evictguard").Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := p.Status.ContainerStatuses[0]; cs.ContainerID != before.ContainerID || cs.RestartCount != before.RestartCount {
		t.Errorf("container %s restarts %d, before %s %d", cs.ContainerID, cs.RestartCount, before.ContainerID, before.RestartCount)
	}
	err = harness.WaitFor(ctx, 30*time.Second, nil, func() error {
		l, err := n.a.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range l.Items {
			if e.Reason == "EvictionThresholdsChanged" && strings.Contains(e.Message, op.ID) {
				return nil
			}
		}
		return errors.New("no EvictionThresholdsChanged Event for the operation")
	})
	if err != nil {
		t.Errorf("%v\npods' logs:\n%s", err, n.podLog(t))
	}
}
