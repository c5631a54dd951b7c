package reclaim

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRIGC is runtime GC through the kubelet's CRI socket (containerd, CRI-O). Every CRI
// container belongs to a pod, so it is more conservative than DockerGC: it removes only
// exited containers beyond the newest KeepPerContainer attempts of the same container in the
// same pod sandbox (the kubelet keeps the last one for logs and restart counts), then images
// that no remaining container — running or exited — references, that the runtime pins (the
// pause image), or that KeepImages names.
type CRIGC struct {
	// Socket is the CRI unix socket as this process sees it.
	Socket string
	// KeepPerContainer exited attempts are kept per pod container (at least 1).
	KeepPerContainer int
	// KeepImages are references (tags, digests or IDs) never removed.
	KeepImages []string
	// Timeout bounds each call (default 30s).
	Timeout time.Duration
}

// Plan lists what Run would remove.
func (g *CRIGC) Plan(ctx context.Context) ([]GCItem, error) { return g.run(ctx, true) }

// Run removes exited containers beyond the keep count, then unreferenced images.
func (g *CRIGC) Run(ctx context.Context) ([]GCItem, error) { return g.run(ctx, false) }

func (g *CRIGC) run(ctx context.Context, dry bool) ([]GCItem, error) {
	to := g.Timeout
	if to <= 0 {
		to = 30 * time.Second
	}
	conn, err := grpc.NewClient("unix://"+g.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("CRI %s: %w", g.Socket, err)
	}
	defer conn.Close()
	rt, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, to) }

	cctx, cancel := call()
	cl, err := rt.ListContainers(cctx, &runtimeapi.ListContainersRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("CRI ListContainers: %w", err)
	}
	containers := cl.GetContainers()
	keep := max(1, g.KeepPerContainer)
	byKey := map[string][]*runtimeapi.Container{}
	for _, c := range containers {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			k := c.GetPodSandboxId() + "/" + c.GetMetadata().GetName()
			byKey[k] = append(byKey[k], c)
		}
	}
	// The writable layer's size is what removing an exited container gives back; a runtime
	// that does not report it counts 0 (the ladder measures the filesystem anyway).
	size := map[string]int64{}
	if len(byKey) > 0 {
		cctx, cancel := call()
		st, err := rt.ListContainerStats(cctx, &runtimeapi.ListContainerStatsRequest{})
		cancel()
		if err == nil {
			for _, cs := range st.GetStats() {
				size[cs.GetAttributes().GetId()] = int64(cs.GetWritableLayer().GetUsedBytes().GetValue())
			}
		}
	}
	gone := map[string]bool{}
	var done []GCItem
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		list := byKey[k]
		sort.Slice(list, func(i, j int) bool { return list[i].GetCreatedAt() > list[j].GetCreatedAt() })
		for _, c := range list[min(keep, len(list)):] {
			if !dry {
				cctx, cancel := call()
				_, err := rt.RemoveContainer(cctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.GetId()})
				cancel()
				if err != nil {
					return done, fmt.Errorf("CRI RemoveContainer %s: %w", c.GetId(), err)
				}
			}
			gone[c.GetId()] = true
			done = append(done, GCItem{Kind: "container", ID: c.GetId(), Name: k + "#" + fmt.Sprint(c.GetMetadata().GetAttempt()), Bytes: size[c.GetId()]})
		}
	}

	used := map[string]bool{}
	for _, r := range g.KeepImages {
		used[r] = true
	}
	for _, c := range containers {
		if !gone[c.GetId()] {
			used[c.GetImageRef()] = true
			used[c.GetImage().GetImage()] = true
			if id := c.GetImageId(); id != "" {
				used[id] = true
			}
		}
	}
	// Sandboxes are not containers: their (pause) image is found in the verbose status.
	cctx, cancel = call()
	sl, err := rt.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{})
	cancel()
	if err != nil {
		return done, fmt.Errorf("CRI ListPodSandbox: %w", err)
	}
	for _, sb := range sl.GetItems() {
		cctx, cancel := call()
		st, err := rt.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.GetId(), Verbose: true})
		cancel()
		if err != nil {
			return done, fmt.Errorf("CRI PodSandboxStatus %s: %w", sb.GetId(), err)
		}
		var info struct {
			Image string `json:"image"`
		}
		if raw := st.GetInfo()["info"]; raw != "" && json.Unmarshal([]byte(raw), &info) == nil && info.Image != "" {
			used[info.Image] = true
		} else {
			// Without knowing the sandbox image, removing any unreferenced image could take it.
			return done, fmt.Errorf("CRI: sandbox %s does not report its image; not removing images", sb.GetId())
		}
	}
	cctx, cancel = call()
	il, err := is.ListImages(cctx, &runtimeapi.ListImagesRequest{})
	cancel()
	if err != nil {
		return done, fmt.Errorf("CRI ListImages: %w", err)
	}
	for _, im := range il.GetImages() {
		refs := append(append([]string{im.GetId(), strings.TrimPrefix(im.GetId(), "sha256:")}, im.GetRepoTags()...), im.GetRepoDigests()...)
		if im.GetPinned() || slices.ContainsFunc(refs, func(r string) bool { return used[r] }) {
			continue
		}
		if !dry {
			cctx, cancel := call()
			_, err := is.RemoveImage(cctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: im.GetId()}})
			cancel()
			if err != nil {
				return done, fmt.Errorf("CRI RemoveImage %s: %w", im.GetId(), err)
			}
		}
		done = append(done, GCItem{Kind: "image", ID: im.GetId(), Name: firstOr(im.GetRepoTags(), im.GetId()), Bytes: int64(im.GetSize())})
	}
	return done, nil
}
