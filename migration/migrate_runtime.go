package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RuntimeFacts is what a running runtime reports about its data: where it is and how much of
// it there is. Migration records them before and checks them after the switch.
type RuntimeFacts struct {
	Root       string `json:"root"`                // Docker: DockerRootDir; containerd: CRI image fs mountpoint
	Driver     string `json:"driver,omitempty"`    // storage driver / snapshotter
	Images     int    `json:"images"`              // images (containerd: CRI, namespace k8s.io)
	Containers int    `json:"containers"`          // all containers, running or not
	Volumes    int    `json:"volumes,omitempty"`   // Docker named volumes
	Sandboxes  int    `json:"sandboxes,omitempty"` // containerd: CRI pod sandboxes
	// Running names the containers running now (Docker: names; CRI: pod/container).
	Running []string `json:"running,omitempty"`
	// LiveRestore: dockerd keeps containers running while it is stopped ("live-restore").
	LiveRestore bool `json:"liveRestore,omitempty"`
}

func (f RuntimeFacts) String() string {
	s := fmt.Sprintf("root %s, %d image(s), %d container(s)", f.Root, f.Images, f.Containers)
	if f.Volumes > 0 {
		s += fmt.Sprintf(", %d volume(s)", f.Volumes)
	}
	return s
}

// dockerFacts asks dockerd over its API socket.
func dockerFacts(ctx context.Context, socket string) (RuntimeFacts, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	get := func(path string, v any) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("docker API %s: %w", socket, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return fmt.Errorf("docker API %s: GET %s: %w", socket, path, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("docker API %s: GET %s: %s: %s", socket, path, resp.Status, strings.TrimSpace(string(body)))
		}
		if err := json.Unmarshal(body, v); err != nil {
			return fmt.Errorf("docker API %s: GET %s: %w", socket, path, err)
		}
		return nil
	}
	var info struct {
		DockerRootDir      string
		Driver             string
		LiveRestoreEnabled bool
	}
	if err := get("/info", &info); err != nil {
		return RuntimeFacts{}, err
	}
	var images []json.RawMessage
	var containers []struct {
		Names []string
		State string
	}
	var vols struct{ Volumes []json.RawMessage }
	if err := get("/images/json?all=1", &images); err != nil {
		return RuntimeFacts{}, err
	}
	if err := get("/containers/json?all=1", &containers); err != nil {
		return RuntimeFacts{}, err
	}
	if err := get("/volumes", &vols); err != nil {
		return RuntimeFacts{}, err
	}
	f := RuntimeFacts{Root: info.DockerRootDir, Driver: info.Driver, Images: len(images), Containers: len(containers), Volumes: len(vols.Volumes),
		LiveRestore: info.LiveRestoreEnabled}
	for _, c := range containers {
		if c.State == "running" || c.State == "paused" || c.State == "restarting" {
			f.Running = append(f.Running, strings.TrimPrefix(strings.Join(c.Names, ","), "/"))
		}
	}
	return f, nil
}

// criFacts asks a CRI runtime (containerd) over its socket, as the kubelet does.
func criFacts(ctx context.Context, socket string) (RuntimeFacts, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return RuntimeFacts{}, fmt.Errorf("CRI %s: %w", socket, err)
	}
	defer conn.Close()
	img := runtimeapi.NewImageServiceClient(conn)
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	fsi, err := img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return RuntimeFacts{}, fmt.Errorf("CRI %s: ImageFsInfo: %w", socket, err)
	}
	var f RuntimeFacts
	if fs := fsi.GetImageFilesystems(); len(fs) > 0 {
		f.Root = fs[0].GetFsId().GetMountpoint()
	}
	imgs, err := img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return RuntimeFacts{}, fmt.Errorf("CRI %s: ListImages: %w", socket, err)
	}
	f.Images = len(imgs.GetImages())
	cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return RuntimeFacts{}, fmt.Errorf("CRI %s: ListContainers: %w", socket, err)
	}
	f.Containers = len(cs.GetContainers())
	for _, c := range cs.GetContainers() {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			f.Running = append(f.Running, c.GetLabels()["io.kubernetes.pod.name"]+"/"+c.GetMetadata().GetName())
		}
	}
	ps, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return RuntimeFacts{}, fmt.Errorf("CRI %s: ListPodSandbox: %w", socket, err)
	}
	f.Sandboxes = len(ps.GetItems())
	return f, nil
}

// within reports whether p is dir or below it (both cleaned, absolute).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// criStopPodSandboxes stops every ready pod sandbox (and so its containers) through CRI, as
// the kubelet does when it kills a pod. The migration does it after stopping the kubelet and
// before stopping containerd: containerd's shims would otherwise keep the pods' containers
// running from snapshots under the old root. The kubelet, started again on the new root,
// creates the sandboxes anew. It returns the pods stopped ("namespace/name").
func criStopPodSandboxes(ctx context.Context, socket string, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("CRI %s: %w", socket, err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ready := &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}
	ps, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: ready})
	if err != nil {
		return nil, fmt.Errorf("CRI %s: ListPodSandbox: %w", socket, err)
	}
	var stopped []string
	for _, p := range ps.GetItems() {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			return stopped, fmt.Errorf("CRI %s: StopPodSandbox %s/%s: %w", socket, p.GetMetadata().GetNamespace(), p.GetMetadata().GetName(), err)
		}
		stopped = append(stopped, p.GetMetadata().GetNamespace()+"/"+p.GetMetadata().GetName())
	}
	return stopped, nil
}
