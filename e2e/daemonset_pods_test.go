package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/evictguard/evictguard/deploy"
	"github.com/evictguard/evictguard/e2e/harness"
)

// podNodeName is the node of the DaemonSet-as-pods tests; its kubelet is the only one
// registered under this name, which is how the pod's evictguard tells it from the other
// tests' kubelets on this machine (kubeletcfg.Options.NodeName).
const podNodeName = "evictguard-pod-node"

var (
	imageOnce sync.Once
	imagePath string
	imageErr  error
)

// evictguardImage runs `make image` once per test binary and returns the archive: the
// tests run the image users would push, built the way they would build it.
func evictguardImage(t testing.TB) string {
	t.Helper()
	imageOnce.Do(func() {
		out, err := exec.Command("make", "-C", "..", "image").CombinedOutput()
		if err != nil {
			imageErr = fmt.Errorf("make image: %w\n%s", err, out)
			return
		}
		imagePath, imageErr = filepath.Abs("../bin/evictguard-image.tar")
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imagePath
}

// imageRef is the image name and tag the build produces and the manifests reference.
func imageRef(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../deploy/image")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// podNode is one real node in a small real cluster: etcd, kube-apiserver on the node's
// address, kube-controller-manager, kube-scheduler, kube-proxy, and kubelet.service (1.37,
// in the sandboxed systemd) with containerd.service as CRI and a CNI bridge. Its nodefs (the
// kubelet's root dir) is a 64 MiB tmpfs with evictionHard nodefs.available<10%, so a test
// can bring it towards eviction.
type podNode struct {
	a    *harness.APIServer
	sd   *harness.Systemd
	c    *harness.Containerd
	k    *harness.Kubelet
	rt   runtimeapi.RuntimeServiceClient
	ap   *applier
	fill *fillScenario
	// With podNodeOptions.RuntimeOnNodefs: containerd's root on the nodefs tmpfs, and a
	// second tmpfs (Target) to move it to.
	nodefs, target string
}

// podNodeOptions vary the node: by default containerd's root is in its harness directory.
type podNodeOptions struct {
	// RuntimeOnNodefs puts containerd's root on the nodefs (imagefs shares it, as on a
	// kubeadm node) and mounts a second, empty tmpfs of TargetSize for a data-root move.
	RuntimeOnNodefs bool
	NodefsSize      int64 // default scenarioSize
	TargetSize      int64
	// UnitsInEtc: the sandbox's unit directory is its /etc/systemd/system, where a pod's
	// /host finds kubelet.service (for the threshold rewrite's writers).
	UnitsInEtc bool
}

func startPodNode(t *testing.T) *podNode {
	t.Helper()
	return startPodNodeWith(t, podNodeOptions{})
}

func startPodNodeWith(t *testing.T, opts podNodeOptions) *podNode {
	t.Helper()
	harness.RequireRoot(t)
	image := evictguardImage(t)
	ip := harness.NodeAddress(t)
	// The DaemonSet's hostPath /var/lib/evictguard (DirectoryOrCreate: the fill-rate history,
	// the staged binary) is the machine's: removed after the pods are gone if the harness
	// created it.
	harness.ClaimHostPaths(t, "/var/lib/evictguard")
	n := &podNode{a: harness.StartAPIServerOn(t, ip)}
	harness.StartControllerManager(t, n.a)
	harness.StartScheduler(t, n.a)
	// Mounted before the sandboxed systemd starts: its units (the kubelet, containerd, the
	// pods) live in its mount namespace, a copy of this one at its start.
	if opts.NodefsSize == 0 {
		opts.NodefsSize = scenarioSize
	}
	root := harness.TmpFS(t, opts.NodefsSize, 0)
	n.nodefs = root
	var copts harness.ContainerdOptions
	if opts.RuntimeOnNodefs {
		copts.Root = filepath.Join(root, "containerd")
		n.target = harness.TmpFS(t, opts.TargetSize, 0)
	}
	n.sd = harness.StartSystemdWith(t, harness.SystemdOptions{SharedRoot: true, UnitDirAsSystem: opts.UnitsInEtc})
	n.c = harness.StartContainerdUnit(t, n.sd, copts)
	harness.ClusterCNI(t, n.c)
	n.c.Ctr(t, "images", "import", ociBusyboxTarCmd(t, "evictguard.local/pause:1", []string{"/bin/sleep", "1000000"}))
	n.c.Ctr(t, "images", "import", image)
	n.k = harness.PrepareKubelet(t, harness.KubeletOptions{Containerd: n.c, APIServer: n.a, NodeName: podNodeName,
		RootDir: root, Address: ip, ConfigExtra: "evictionHard:\n  nodefs.available: \"10%\"\n  imagefs.available: \"5%\"\n"})
	startKubeletService(t, n.sd, n.k)
	if !opts.RuntimeOnNodefs {
		// 24 MiB to the threshold at 128 KiB/s: about 3 minutes, inside the base's 10 minute
		// critical horizon; the pod samples every 10 s (the base's monitor.interval).
		n.fill = fillScenarioOn(t, root, n.k.ConfigPath, 190*time.Second, 128<<10)
	}
	conn, err := grpc.NewClient(n.c.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.rt = runtimeapi.NewRuntimeServiceClient(conn)
	n.ap = newApplier(t, n.a)
	if err := waitNodeCondition(n.a, n.k, podNodeName, corev1.NodeReady); err != nil {
		b, _ := os.ReadFile(filepath.Join(n.k.Dir, "kubelet.log"))
		t.Fatalf("node not Ready: %v\n%s", err, tail(string(b), 3000))
	}
	// As on a node, kube-proxy (a DaemonSet there) starts once its Node exists.
	harness.StartKubeProxy(t, n.a, podNodeName)
	return n
}

// applyObjects applies rendered manifests, leaving out the Prometheus Operator's kinds (this
// cluster has no operator; a real Prometheus is configured by the test instead).
func (n *podNode) applyObjects(t *testing.T, objs []deploy.Object) {
	t.Helper()
	for _, o := range objs {
		if av, _ := o["apiVersion"].(string); strings.HasPrefix(av, "monitoring.coreos.com/") {
			continue
		}
		if err := n.ap.apply(t.Context(), o, false); err != nil {
			t.Fatalf("apply %s: %v", deploy.Key(o), err)
		}
	}
}

// daemonPods lists the evictguard pods on the node.
func (n *podNode) daemonPods(ctx context.Context) ([]corev1.Pod, error) {
	l, err := n.a.Client.CoreV1().Pods("evictguard").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=evictguard"})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitReadyPod waits for a Ready evictguard pod running image and returns it.
func (n *podNode) waitReadyPod(t *testing.T, image string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var ready *corev1.Pod
	var last string
	err := harness.WaitFor(t.Context(), timeout, nil, func() error {
		pods, err := n.daemonPods(t.Context())
		if err != nil {
			return err
		}
		var states []string
		for i := range pods {
			p := &pods[i]
			states = append(states, fmt.Sprintf("%s %s ready=%v %v", p.Name, p.Status.Phase, podReady(p), p.Status.ContainerStatuses))
			if podReady(p) && p.Spec.Containers[0].Image == image {
				ready = p
				return nil
			}
		}
		last = strings.Join(states, "\n")
		return fmt.Errorf("no Ready evictguard pod of %s: %d pods", image, len(pods))
	})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(n.k.Dir, "kubelet.log"))
		t.Fatalf("%v\npods:\n%s\n%s\nkubelet log:\n%s", err, last, n.describe(t), tail(string(b), 4000))
	}
	return ready
}

// podLogOf is the whole log of pod's evictguard container (its n-th run).
func (n *podNode) podLogOf(pod *corev1.Pod, run int) string {
	b, _ := os.ReadFile(filepath.Join(n.k.Dir, "pod-logs", fmt.Sprintf("evictguard_%s_%s", pod.Name, pod.UID), "evictguard", fmt.Sprintf("%d.log", run)))
	return string(b)
}

// podLog is the tail of the evictguard containers' logs on the node (the kubelet's pod
// logs directory).
func (n *podNode) podLog(t *testing.T) string {
	files, _ := filepath.Glob(filepath.Join(n.k.Dir, "pod-logs", "evictguard_*", "evictguard", "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s\n%s\n", f, tail(string(data), 3000))
	}
	return b.String()
}

// describe is the DaemonSet's status and the namespace's Events, for failure messages.
func (n *podNode) describe(t *testing.T) string {
	var b strings.Builder
	if ds, err := n.a.Client.AppsV1().DaemonSets("evictguard").Get(context.Background(), "evictguard", metav1.GetOptions{}); err == nil {
		fmt.Fprintf(&b, "DaemonSet status: %+v\n", ds.Status)
	}
	if node, err := n.a.Client.CoreV1().Nodes().Get(context.Background(), podNodeName, metav1.GetOptions{}); err == nil {
		fmt.Fprintf(&b, "Node taints: %v\n", node.Spec.Taints)
	}
	if l, err := n.a.Client.CoreV1().Events("evictguard").List(context.Background(), metav1.ListOptions{}); err == nil {
		for _, e := range l.Items {
			fmt.Fprintf(&b, "event %s %s/%s: %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

// exec runs argv in the pod's evictguard container through the CRI (what `kubectl exec`
// ends in) and returns its stdout; a non-zero exit fails the test.
func (n *podNode) exec(t *testing.T, pod *corev1.Pod, argv ...string) string {
	t.Helper()
	resp, err := n.rt.ListContainers(t.Context(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(pod.UID), "io.kubernetes.container.name": "evictguard"}}})
	if err != nil || len(resp.GetContainers()) != 1 {
		t.Fatalf("the pod's container: %v (%d found)", err, len(resp.GetContainers()))
	}
	r, err := n.rt.ExecSync(t.Context(), &runtimeapi.ExecSyncRequest{ContainerId: resp.GetContainers()[0].GetId(), Cmd: argv, Timeout: 60})
	if err != nil {
		t.Fatalf("exec %v: %v", argv, err)
	}
	if r.GetExitCode() != 0 {
		t.Fatalf("exec %v: exit %d\nstdout: %s\nstderr: %s", argv, r.GetExitCode(), r.GetStdout(), r.GetStderr())
	}
	return string(r.GetStdout())
}

// checkThresholdsFromPod runs `evictguard thresholds` inside the pod (node paths under
// /host, the kubelet found through the host's /proc) and compares it with /configz.
func (n *podNode) checkThresholdsFromPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	stdout := n.exec(t, pod, "/usr/local/bin/evictguard", "thresholds", "-o", "json", "--host-root", "/host")
	cz, raw := kubeletConfigz(t, n.k)
	if cz.EvictionHard["nodefs.available"] != "10%" {
		t.Fatalf("the kubelet's /configz evictionHard = %v (the test's kubelet is wrong)", cz.EvictionHard)
	}
	compareWithConfigz(t, cz, raw, stdout)
	got := decodeThresholds(t, stdout)
	if got.Kubelet.Version != "1.37.2" {
		t.Errorf("from the pod, the kubelet's version is %q, want 1.37.2 (warnings: %v)", got.Kubelet.Version, got.Warnings)
	}
	if got.Kubelet.ConfigFile != n.k.ConfigPath {
		t.Errorf("from the pod, the kubelet's config file is %q, want %q (the node path)", got.Kubelet.ConfigFile, n.k.ConfigPath)
	}
}

// condition returns the node's EvictionPredicted condition.
func (n *podNode) condition(ctx context.Context) (*corev1.NodeCondition, error) {
	node, err := n.a.Client.CoreV1().Nodes().Get(ctx, podNodeName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == "EvictionPredicted" {
			return &node.Status.Conditions[i], nil
		}
	}
	return nil, errors.New("no EvictionPredicted condition on the node")
}

// events returns evictguard's Events about the node by reason.
func (n *podNode) events(ctx context.Context) (map[string][]corev1.Event, error) {
	l, err := n.a.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + podNodeName})
	if err != nil {
		return nil, err
	}
	out := map[string][]corev1.Event{}
	for _, e := range l.Items {
		if e.Source.Component == "evictguard" || e.ReportingController == "evictguard" {
			out[e.Reason] = append(out[e.Reason], e)
		}
	}
	return out, nil
}

// prometheusFor starts a real Prometheus that scrapes the evictguard pods at the
// endpoints of the shipped Service, as the ServiceMonitor says (port "metrics", instance =
// the node), evaluates the shipped rules and alerts a real Alertmanager. Debian's Prometheus
// is built without Kubernetes service discovery, so the test does that part: every second it
// writes the Service's EndpointSlices as a file_sd target file, which Prometheus watches.
func (n *podNode) prometheusFor(t *testing.T) (*harness.Prometheus, *harness.Alertmanager) {
	t.Helper()
	rules, err := os.ReadFile("../deploy/prometheus/evictguard-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	am := harness.StartAlertmanager(t, "")
	sdDir := harness.TempDir(t, "prometheus-sd")
	targets := filepath.Join(sdDir, "evictguard.json")
	if err := n.writeTargets(t.Context(), targets); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				_ = n.writeTargets(ctx, targets)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	cfg := fmt.Sprintf(`global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files: ["evictguard-rules.yaml"]
alerting:
  alertmanagers:
  - static_configs:
    - targets: [%q]
scrape_configs:
- job_name: evictguard
  file_sd_configs:
  - files: [%q]
    refresh_interval: 1s
`, am.HostPort(), targets)
	return harness.StartPrometheus(t, cfg, map[string]string{"evictguard-rules.yaml": string(rules)}), am
}

// writeTargets writes the ready endpoints of Service evictguard's port "metrics" as a file_sd
// file (atomically), labelled as the ServiceMonitor relabels them.
func (n *podNode) writeTargets(ctx context.Context, path string) error {
	l, err := n.a.Client.DiscoveryV1().EndpointSlices("evictguard").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=evictguard"})
	if err != nil {
		return err
	}
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := []group{}
	for _, es := range l.Items {
		port := int32(0)
		for _, p := range es.Ports {
			if p.Name != nil && *p.Name == "metrics" && p.Port != nil {
				port = *p.Port
			}
		}
		for _, ep := range es.Endpoints {
			if port == 0 || ep.Conditions.Ready == nil || !*ep.Conditions.Ready || ep.TargetRef == nil || ep.NodeName == nil {
				continue
			}
			for _, a := range ep.Addresses {
				groups = append(groups, group{Targets: []string{fmt.Sprintf("%s:%d", a, port)},
					Labels: map[string]string{"instance": *ep.NodeName, "pod": ep.TargetRef.Name}})
			}
		}
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return nil
	}
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// promQuery runs an instant query and returns its result vector.
func promQuery(p *harness.Prometheus, q string) ([]struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}, error) {
	b, code, err := httpGetCode(p.URL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("query %s: %d %s", q, code, b)
	}
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return r.Data.Result, nil
}

// waitScraped waits until Prometheus scrapes pod (up == 1 for its pod label).
func waitScraped(t *testing.T, p *harness.Prometheus, pod string) {
	t.Helper()
	err := harness.WaitFor(t.Context(), 90*time.Second, p.Proc, func() error {
		res, err := promQuery(p, fmt.Sprintf(`up{job="evictguard",pod=%q,instance=%q} == 1`, pod, podNodeName))
		if err != nil {
			return err
		}
		if len(res) == 0 {
			return fmt.Errorf("pod %s not scraped yet", pod)
		}
		return nil
	})
	if err != nil {
		b, _, _ := httpGetCode(p.URL + "/api/v1/targets")
		t.Fatalf("%v\ntargets: %s", err, b)
	}
}

// TestDaemonSetPods runs evictguard the way clusters deploy it: the kustomize base applied
// for real to a real API server, its DaemonSet's pod started by the real kubelet from the
// image `make image` built, and then the Helm chart with default values. From the pod (not a
// host process) it must: become Running and Ready (probes), find the kubelet through /host
// and the host's /proc and compute the thresholds /configz reports, write its condition and
// Events with the shipped ServiceAccount's token, be scraped by a real Prometheus through the
// shipped Service, and fire and resolve EvictionImminent as the node's tmpfs nodefs fills
// and is freed. While the condition is set, a rolling update to a new image tag keeps a
// Ready pod on the node and the condition; a restart of kubelet.service keeps the pod.
func TestDaemonSetPods(t *testing.T) {
	t.Parallel()
	start := time.Now()
	n := startPodNode(t)
	t.Logf("cluster and node ready in %s", time.Since(start).Round(time.Second))
	ref := imageRef(t)
	ctx := t.Context()

	objs, err := deploy.Kustomize("../deploy/kubernetes/base")
	if err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	n.applyObjects(t, objs)
	pod := n.waitReadyPod(t, ref, 120*time.Second)
	t.Logf("kustomize base: pod %s Ready %s after apply (IP %s)", pod.Name, time.Since(applied).Round(100*time.Millisecond), pod.Status.PodIP)
	if pod.Spec.NodeName != podNodeName || pod.Status.PodIP == "" || pod.Status.PodIP == harness.ClusterNodeIP {
		t.Fatalf("pod on %q with IP %q: want a pod-network IP on %s", pod.Spec.NodeName, pod.Status.PodIP, podNodeName)
	}
	n.checkThresholdsFromPod(t, pod)

	// The condition and the discovery Event, written by the pod with its ServiceAccount.
	err = harness.WaitFor(ctx, 60*time.Second, nil, func() error {
		c, err := n.condition(ctx)
		if err != nil {
			return err
		}
		if c.Reason != "NoEvictionPredicted" {
			return fmt.Errorf("condition %s %s", c.Status, c.Reason)
		}
		ev, err := n.events(ctx)
		if err != nil {
			return err
		}
		if len(ev["EvictionThresholdsDiscovered"]) == 0 {
			return fmt.Errorf("no EvictionThresholdsDiscovered event yet (%d reasons)", len(ev))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the pod's condition and Events: %v", err)
	}
	n.checkWriterIsServiceAccount(t)
	// The log budget annotation too, through the shipped RBAC and admission policy.
	err = harness.WaitFor(ctx, 60*time.Second, nil, func() error {
		node, err := n.a.Client.CoreV1().Nodes().Get(ctx, podNodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, ok := node.Annotations["evictguard.dev/log-budget-bytes"]; !ok {
			return errors.New("no evictguard.dev/log-budget-bytes annotation on the node")
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v\npod log:\n%s", err, n.podLog(t))
	}
	if log := n.podLogOf(pod, 0); strings.Contains(log, "forbidden") {
		t.Errorf("the pod was refused something by the API server:\n%s", tail(log, 3000))
	}

	prom, am := n.prometheusFor(t)
	waitScraped(t, prom, pod.Name)

	// Fill nodefs: EvictionImminent in Alertmanager, the condition True, the Event.
	stop := n.fill.StartWriter(t)
	fillStart := time.Now()
	var lastErr error
	err = harness.WaitFor(ctx, 240*time.Second, prom.Proc, func() (err error) {
		defer func() {
			if err != nil {
				lastErr = err
			}
		}()
		if n.fill.Available(t) < n.fill.Threshold {
			return fmt.Errorf("threshold crossed before the alert and condition arrived (%w)", lastErr)
		}
		as, err := activeAlerts(am, "EvictionImminent", "nodefs.available")
		if err != nil {
			return err
		}
		if len(as) == 0 {
			return errors.New("no EvictionImminent alert yet")
		}
		c, err := n.condition(ctx)
		if err != nil {
			return err
		}
		if c.Status != corev1.ConditionTrue {
			return fmt.Errorf("condition %s %s", c.Status, c.Reason)
		}
		return nil
	})
	if err != nil {
		res, _ := promQuery(prom, `evictguard_signal_seconds_to_threshold`)
		t.Fatalf("filling: %v\nseconds to threshold in Prometheus: %v\npod log:\n%s", err, res, n.podLog(t))
	}
	t.Logf("EvictionImminent in Alertmanager and the condition True %s after the writer started, %.1f MiB above the threshold",
		time.Since(fillStart).Round(time.Second), float64(n.fill.Available(t)-n.fill.Threshold)/(1<<20))
	if ev, _ := n.events(ctx); len(ev["EvictionImminent"]) != 1 {
		t.Errorf("EvictionImminent events: %d, want 1", len(ev["EvictionImminent"]))
	}

	// A rolling update to a new tag while the condition is set, at a slower fill.
	stop()
	stop = n.fill.StartWriterAt(t, 16<<10)
	pod = n.rollingUpdate(t, pod, strings.TrimSuffix(ref, ":v0.1.0")+":v0.1.1-e2e", am)
	n.checkThresholdsFromPod(t, pod)
	waitScraped(t, prom, pod.Name)

	// kubelet.service restarted: the pod keeps running (same container, no restart).
	n.restartKubelet(t, pod)

	stop()
	n.fill.Free(t)
	freed := time.Now()
	var condition *corev1.NodeCondition
	// The fit drops a rate only once the flat samples outweigh the falling ones (about half
	// the 5 minute window), so resolving takes a few minutes.
	err = harness.WaitFor(ctx, 300*time.Second, prom.Proc, func() error {
		as, err := activeAlerts(am, "EvictionImminent", "nodefs.available")
		if err != nil {
			return err
		}
		if len(as) > 0 {
			return fmt.Errorf("still active:\n%s", describeAlerts(as))
		}
		c, err := n.condition(ctx)
		if err != nil {
			return err
		}
		// The condition covers every signal of the node: on a machine shared with other
		// tests filling tmpfs disks (which is memory), memory.available can be predicted to
		// reach its threshold too. What must be gone is nodefs'.
		if c.Status == corev1.ConditionTrue && strings.Contains(c.Message, "nodefs.available") {
			return fmt.Errorf("condition %s %s: %s", c.Status, c.Reason, c.Message)
		}
		condition = c
		return nil
	})
	if err != nil {
		t.Fatalf("after freeing: %v\n%s", err, n.podLog(t))
	}
	t.Logf("resolved, and the condition no longer names nodefs.available, %s after the space was freed (%s %s: %s)",
		time.Since(freed).Round(time.Second), condition.Status, condition.Reason, condition.Message)

	// The Helm chart with default values, in place of the kustomize base.
	n.deleteDaemonSet(t)
	chart, err := deploy.Helm("../deploy/helm/evictguard", "evictguard", "evictguard", nil)
	if err != nil {
		t.Fatal(err)
	}
	applied = time.Now()
	n.applyObjects(t, chart)
	pod = n.waitReadyPod(t, ref, 120*time.Second)
	t.Logf("helm chart: pod %s Ready %s after apply", pod.Name, time.Since(applied).Round(100*time.Millisecond))
	n.checkThresholdsFromPod(t, pod)
	waitScraped(t, prom, pod.Name)
	// The chart's pod writes the condition with the chart's ServiceAccount and RBAC.
	err = harness.WaitFor(ctx, 60*time.Second, nil, func() error {
		c, err := n.condition(ctx)
		if err != nil {
			return err
		}
		// (condition times have whole seconds)
		if c.LastHeartbeatTime.Before(&metav1.Time{Time: applied.Truncate(time.Second)}) {
			return errors.New("the chart's pod has not written the condition yet")
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v\npod log:\n%s", err, tail(n.podLogOf(pod, 0), 3000))
	}
	res, err := promQuery(prom, fmt.Sprintf(`count(evictguard_filesystem_available_bytes{pod=%q}) > 0`, pod.Name))
	if err != nil || len(res) != 1 {
		t.Errorf("the chart's pod's nodefs.available in Prometheus: %v %v", res, err)
	}
	t.Logf("test took %s", time.Since(start).Round(time.Second))
}

// checkWriterIsServiceAccount: the condition on the Node was written by the pod's
// ServiceAccount (the Node's managed fields name the manager evictguard uses), and the pod
// has no credentials but that ServiceAccount's token.
func (n *podNode) checkWriterIsServiceAccount(t *testing.T) {
	t.Helper()
	node, err := n.a.Client.CoreV1().Nodes().Get(t.Context(), podNodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var managers []string
	for _, mf := range node.ManagedFields {
		if mf.Subresource == "status" && strings.Contains(mf.FieldsV1.GetRawString(), "EvictionPredicted") {
			managers = append(managers, mf.Manager)
		}
	}
	if len(managers) != 1 || !strings.HasPrefix(managers[0], "evictguard") {
		t.Errorf("managers of the EvictionPredicted condition: %v, want evictguard's", managers)
	}
	review, err := n.a.Client.RbacV1().ClusterRoleBindings().List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=evictguard"})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range review.Items {
		for _, s := range b.Subjects {
			if s.Kind != "ServiceAccount" || s.Name != "evictguard" {
				t.Errorf("binding %s grants %s %s, want only the evictguard ServiceAccount", b.Name, s.Kind, s.Name)
			}
		}
	}
}

// rollingUpdate tags the image as newRef, sets it on the DaemonSet and follows the rollout
// until the only pod runs newRef, is Ready and has written the node's condition itself.
// Throughout, a Ready evictguard pod must not be missing from the node for longer than the
// readiness probe's period, the node's condition must stay True and EvictionImminent must stay
// active in Alertmanager: the new pod restores the fill-rate history from the node's state
// dir and predicts from its first sample.
func (n *podNode) rollingUpdate(t *testing.T, old *corev1.Pod, newRef string, am *harness.Alertmanager) *corev1.Pod {
	t.Helper()
	ctx := t.Context()
	n.c.Ctr(t, "images", "tag", "--force", old.Spec.Containers[0].Image, newRef)
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"evictguard","image":%q}]}}}}`, newRef)
	ds, err := n.a.Client.AppsV1().DaemonSets("evictguard").Get(ctx, "evictguard", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	period := time.Duration(ds.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds) * time.Second
	began := time.Now()
	if _, err := n.a.Client.AppsV1().DaemonSets("evictguard").Patch(ctx, "evictguard", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	lastReady := began
	var worst time.Duration
	var condStates []string
	var done *corev1.Pod
	var doneAt time.Time
	alertGaps, firstGap := 0, ""
	err = harness.WaitFor(ctx, 120*time.Second, nil, func() error {
		pods, err := n.daemonPods(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		anyReady := slices.ContainsFunc(pods, func(p corev1.Pod) bool { return podReady(&p) })
		if anyReady {
			lastReady = now
		} else if gap := now.Sub(lastReady); gap > worst {
			worst = gap
		}
		c, err := n.condition(ctx)
		if err != nil {
			return err
		}
		s := string(c.Status) + " " + c.Reason
		if len(condStates) == 0 || condStates[len(condStates)-1] != s {
			condStates = append(condStates, s)
		}
		if as, err := activeAlerts(am, "EvictionImminent", "nodefs.available"); err == nil && len(as) == 0 {
			if alertGaps++; alertGaps == 1 {
				firstGap = fmt.Sprintf("%s after the patch", now.Sub(began).Round(100*time.Millisecond))
			}
		}
		if done == nil && len(pods) == 1 && pods[0].Spec.Containers[0].Image == newRef && podReady(&pods[0]) {
			done, doneAt = &pods[0], now
		}
		if done == nil {
			return fmt.Errorf("%d pods, rollout not done", len(pods))
		}
		if !c.LastHeartbeatTime.After(doneAt.Add(-time.Second)) {
			return errors.New("the new pod has not written the condition yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("rolling update: %v", err)
	}
	t.Logf("rolling update to %s: the new pod %s alone and Ready %s after the patch, writing the condition itself after %s; longest time without a Ready pod %s (probe period %s); condition throughout: %v",
		newRef, done.Name, doneAt.Sub(began).Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond), worst.Round(100*time.Millisecond), period, condStates)
	if worst > period {
		t.Errorf("the node was without a Ready evictguard pod for %s, longer than the probe period %s", worst, period)
	}
	if len(condStates) != 1 || !strings.HasPrefix(condStates[0], "True") {
		t.Errorf("the condition changed during the rollout: %v", condStates)
	}
	if ev, _ := n.events(ctx); len(ev["EvictionNoLongerImminent"]) != 0 {
		t.Errorf("EvictionNoLongerImminent posted during the rollout: %v", ev["EvictionNoLongerImminent"])
	}
	if alertGaps > 0 {
		t.Errorf("EvictionImminent was not active in Alertmanager at %d polls during the rollout, first %s", alertGaps, firstGap)
	}
	if log := n.podLogOf(done, 0); !strings.Contains(log, "fill-rate history restored") {
		t.Errorf("the new pod did not restore the fill-rate history:\n%s", tail(log, 3000))
	}
	return done
}

// restartKubelet restarts kubelet.service over D-Bus and checks that pod is untouched: same
// container, no restart, Ready again once the kubelet is back.
func (n *podNode) restartKubelet(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx := t.Context()
	before := pod.Status.ContainerStatuses[0]
	conn := n.sd.Conn(t)
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, "kubelet.service", "replace", done); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r != "done" {
		t.Fatalf("restart kubelet.service: %s", r)
	}
	restarted := time.Now()
	if err := n.k.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	err := harness.WaitFor(ctx, 60*time.Second, nil, func() error {
		p, err := n.a.Client.CoreV1().Pods("evictguard").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !podReady(p) {
			return errors.New("pod not Ready")
		}
		cs := p.Status.ContainerStatuses[0]
		if cs.ContainerID != before.ContainerID || cs.RestartCount != before.RestartCount {
			return fmt.Errorf("container %s restarts %d, before %s %d", cs.ContainerID, cs.RestartCount, before.ContainerID, before.RestartCount)
		}
		// The kubelet reports the pod again after its restart.
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.LastTransitionTime.After(restarted) {
				return fmt.Errorf("pod Ready changed at %s after the kubelet's restart", c.LastTransitionTime)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after restarting kubelet.service: %v", err)
	}
	t.Logf("kubelet.service restarted; pod %s kept its container %s", pod.Name, before.ContainerID)
}

// deleteDaemonSet deletes the DaemonSet and waits until its pods are gone.
func (n *podNode) deleteDaemonSet(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	fg := metav1.DeletePropagationForeground
	err := n.a.Client.AppsV1().DaemonSets("evictguard").Delete(ctx, "evictguard", metav1.DeleteOptions{PropagationPolicy: &fg})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 90*time.Second, nil, func() error {
		pods, err := n.daemonPods(ctx)
		if err != nil {
			return err
		}
		if len(pods) > 0 {
			return fmt.Errorf("%d pods left", len(pods))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("delete the DaemonSet: %v", err)
	}
}
