package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/reclaim"
)

const gcStaticPod = `apiVersion: v1
kind: Pod
metadata:
  name: gc-app
  namespace: default
spec:
  hostNetwork: true
  restartPolicy: OnFailure
  containers:
  - name: app
    image: evictguard.local/app:pod
    imagePullPolicy: Never
    command: ["/bin/sleep", "1000000"]
  - name: oneshot
    image: evictguard.local/oneshot:1
    imagePullPolicy: Never
    command: ["/bin/true"]
`

// TestLogsCRIGCKeepsWhatPodsNeed: runtime GC through CRI against the containerd serving a
// real kubelet with a static pod (one running container, one exited), removes the image
// nothing uses and keeps the running container's image, the exited container's image and the
// sandbox (pause) image.
func TestLogsCRIGCKeepsWhatPodsNeed(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	// Images come from dockerd: import a busybox rootfs with different configs, save, and
	// load into containerd's k8s.io namespace.
	d := harness.StartDocker(t, harness.DockerOptions{})
	rootfs := harness.BusyboxRootfsTar(t)
	refs := map[string]string{
		"evictguard.local/pause:1":   `CMD ["/bin/sleep", "1000000"]`,
		"evictguard.local/app:pod":   `LABEL role=app`,
		"evictguard.local/oneshot:1": `LABEL role=oneshot`,
		"evictguard.local/junk:1":    `LABEL role=junk`,
	}
	var names []string
	for ref, change := range refs {
		d.CLI(t, "import", "--change", change, rootfs, ref)
		names = append(names, ref)
	}
	slices.Sort(names)
	archive := filepath.Join(harness.TempDir(t, "images"), "images.tar")
	d.CLI(t, append([]string{"save", "-o", archive}, names...)...)

	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	c.Ctr(t, "images", "import", archive)
	k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, StaticPods: map[string]string{"gc-app.yaml": gcStaticPod}})

	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	err = harness.WaitFor(ctx, 90*time.Second, k.Proc, func() error {
		resp, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		if err != nil {
			return err
		}
		state := map[string]runtimeapi.ContainerState{}
		for _, ct := range resp.GetContainers() {
			state[ct.GetMetadata().GetName()] = ct.GetState()
		}
		if state["app"] != runtimeapi.ContainerState_CONTAINER_RUNNING || state["oneshot"] != runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("containers: %v", state)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("static pod did not start: %v\n%s", err, k.Proc.LogTail(30))
	}

	gc := &reclaim.CRIGC{Socket: c.Address}
	plan, err := gc.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done, err := gc.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan %+v, done %+v", plan, done)
	if len(done) != 1 || done[0].Kind != "image" || done[0].Name != "evictguard.local/junk:1" {
		t.Errorf("GC removed %+v, want only the unused image evictguard.local/junk:1", done)
	}
	out := c.Ctr(t, "images", "ls", "-q")
	for _, ref := range []string{"evictguard.local/pause:1", "evictguard.local/app:pod", "evictguard.local/oneshot:1"} {
		if !strings.Contains(out, ref) {
			t.Errorf("GC removed %s, which the pod needs:\n%s", ref, out)
		}
	}
	if strings.Contains(out, "evictguard.local/junk:1") {
		t.Errorf("junk image still listed")
	}
	// The pod is untouched: still running, and a second run has nothing to do.
	if again, err := gc.Plan(ctx); err != nil || len(again) != 0 {
		t.Errorf("second plan: %+v %v", again, err)
	}
}

// TestLogsCRIGCDirect is the same check without a kubelet: the test creates a pod sandbox
// (host network) and two containers through CRI itself — one running, one exited — and a
// second, older exited attempt of the one-shot container, which GC may remove.
func TestLogsCRIGCDirect(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	d := harness.StartDocker(t, harness.DockerOptions{})
	rootfs := harness.BusyboxRootfsTar(t)
	refs := []string{"evictguard.local/pause:1", "evictguard.local/app:pod", "evictguard.local/oneshot:1", "evictguard.local/junk:1"}
	for _, ref := range refs {
		d.CLI(t, "import", "--change", `CMD ["/bin/sleep", "1000000"]`, "--change", "LABEL ref="+ref, rootfs, ref)
	}
	archive := filepath.Join(harness.TempDir(t, "images"), "images.tar")
	d.CLI(t, append([]string{"save", "-o", archive}, refs...)...)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	c.Ctr(t, "images", "import", archive)

	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "gc-app", Namespace: "default", Uid: "gc-app-uid"},
		LogDirectory: harness.TempDir(t, "podlogs"),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
	}
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatalf("run pod sandbox: %v", err)
	}
	t.Cleanup(func() {
		_, _ = rt.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetPodSandboxId()})
		_, _ = rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetPodSandboxId()})
	})
	run := func(name, image string, attempt uint32, cmd ...string) string {
		cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.GetPodSandboxId(), SandboxConfig: sbCfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
				Image: &runtimeapi.ImageSpec{Image: image}, Command: cmd, LogPath: fmt.Sprintf("%s/%d.log", name, attempt)}})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.GetContainerId()}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		return cr.GetContainerId()
	}
	run("app", "evictguard.local/app:pod", 0, "/bin/sleep", "1000000")
	// The older attempt leaves 512 KiB in its writable layer: GC reports it as reclaimed.
	old := run("oneshot", "evictguard.local/oneshot:1", 0, "/bin/dd", "if=/dev/zero", "of=/blob", "bs=1024", "count=512")
	time.Sleep(1100 * time.Millisecond)
	run("oneshot", "evictguard.local/oneshot:1", 1, "/bin/true")
	err = harness.WaitFor(ctx, 30*time.Second, c.Proc, func() error {
		resp, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		if err != nil {
			return err
		}
		exited := 0
		for _, ct := range resp.GetContainers() {
			if ct.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
				exited++
			}
		}
		if exited != 2 {
			return fmt.Errorf("%d exited", exited)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// containerd measures writable layers in the background (stats_collect_period).
	err = harness.WaitFor(ctx, 30*time.Second, c.Proc, func() error {
		st, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: old}})
		if err != nil {
			return err
		}
		if s := st.GetStats(); len(s) != 1 || s[0].GetWritableLayer().GetUsedBytes().GetValue() < 512<<10 {
			return fmt.Errorf("writable layer of %s not measured yet: %v", old, s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	gc := &reclaim.CRIGC{Socket: c.Address}
	done, err := gc.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed %+v", done)
	var got []string
	for _, it := range done {
		got = append(got, it.Kind+":"+it.ID)
	}
	if len(done) != 2 || done[0].Kind != "container" || done[0].ID != old || done[1].Kind != "image" || done[1].Name != "evictguard.local/junk:1" {
		t.Fatalf("GC removed %v, want the older oneshot attempt %s and image junk:1", got, old)
	}
	if done[0].Bytes < 512<<10 || done[1].Bytes <= 0 {
		t.Errorf("bytes reclaimed not reported: container %d (want ≥ 512 KiB), image %d", done[0].Bytes, done[1].Bytes)
	}
	out := c.Ctr(t, "images", "ls", "-q")
	for _, ref := range refs[:3] {
		if !strings.Contains(out, ref) {
			t.Errorf("GC removed %s, which the pod needs", ref)
		}
	}
	if again, err := gc.Plan(ctx); err != nil || len(again) != 0 {
		t.Errorf("second plan: %+v %v", again, err)
	}
}
