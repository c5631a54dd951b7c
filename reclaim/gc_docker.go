package reclaim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// DockerGC removes what dockerd keeps but nothing needs, through the Engine API on its unix
// socket: exited containers beyond a keep count (never one the kubelet manages, never a
// running or paused one), then images no container references — running or stopped, so an
// image a pod's container was created from is never removed — and never a kept reference.
type DockerGC struct {
	// Socket is dockerd's API socket as this process sees it.
	Socket string
	// KeepExited is how many of the newest exited containers to keep.
	KeepExited int
	// KeepImages are image references (repo:tag or IDs) never removed, e.g. the pause image.
	KeepImages []string
	// Timeout bounds each API call (default 30s: removing a vfs layer can take a while).
	Timeout time.Duration

	client *http.Client
}

// GCItem is one thing GC removed (or would remove).
type GCItem struct {
	Kind  string `json:"kind"` // "container" or "image"
	ID    string `json:"id"`
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"` // the API's size estimate
}

type dockerContainer struct {
	ID      string            `json:"Id"`
	Names   []string          `json:"Names"`
	Image   string            `json:"Image"`
	ImageID string            `json:"ImageID"`
	State   string            `json:"State"`
	Created int64             `json:"Created"`
	SizeRw  int64             `json:"SizeRw"`
	Labels  map[string]string `json:"Labels"`
}

type dockerImage struct {
	ID       string   `json:"Id"`
	RepoTags []string `json:"RepoTags"`
	Size     int64    `json:"Size"`
}

func (g *DockerGC) http() *http.Client {
	if g.client == nil {
		to := g.Timeout
		if to <= 0 {
			to = 30 * time.Second
		}
		sock := g.Socket
		g.client = &http.Client{Timeout: to, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
	}
	return g.client
}

func (g *DockerGC) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := g.http().Do(req)
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("docker %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("docker %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// kubeletManaged reports whether a container was made for a pod (cri-dockerd, dockershim):
// the kubelet's own GC owns those, and the newest dead one of each pod carries its logs.
func kubeletManaged(c dockerContainer) bool {
	_, ok := c.Labels["io.kubernetes.pod.uid"]
	return ok || slices.ContainsFunc(c.Names, func(n string) bool { return strings.HasPrefix(n, "/k8s_") })
}

func removable(state string) bool {
	return state == "exited" || state == "dead" || state == "created"
}

// Plan lists what Run would remove, without removing anything.
func (g *DockerGC) Plan(ctx context.Context) ([]GCItem, error) {
	return g.run(ctx, true)
}

// Run removes exited containers beyond the keep count, then unreferenced images, and returns
// what it removed. It stops at the first API error, returning what was done so far.
func (g *DockerGC) Run(ctx context.Context) ([]GCItem, error) {
	return g.run(ctx, false)
}

func (g *DockerGC) run(ctx context.Context, dry bool) ([]GCItem, error) {
	var containers []dockerContainer
	if err := g.call(ctx, http.MethodGet, "/containers/json?all=1&size=1", &containers); err != nil {
		return nil, err
	}
	var candidates []dockerContainer
	for _, c := range containers {
		if removable(c.State) && !kubeletManaged(c) {
			candidates = append(candidates, c)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Created > candidates[j].Created })
	gone := map[string]bool{}
	var done []GCItem
	for i, c := range candidates {
		if i < g.KeepExited {
			continue
		}
		item := GCItem{Kind: "container", ID: c.ID, Name: strings.TrimPrefix(firstOr(c.Names, c.ID), "/"), Bytes: c.SizeRw}
		if !dry {
			if err := g.call(ctx, http.MethodDelete, "/containers/"+url.PathEscape(c.ID)+"?v=0&force=0", nil); err != nil {
				return done, err
			}
		}
		gone[c.ID] = true
		done = append(done, item)
	}

	// Images referenced by any container that stays: running, paused, stopped, kubelet-managed.
	used := map[string]bool{}
	for _, c := range containers {
		if !gone[c.ID] {
			used[c.ImageID] = true
		}
	}
	var images []dockerImage
	if err := g.call(ctx, http.MethodGet, "/images/json", &images); err != nil {
		return done, err
	}
	keep := map[string]bool{}
	for _, ref := range g.KeepImages {
		keep[ref] = true
	}
	for _, im := range images {
		if used[im.ID] || keep[im.ID] || keep[strings.TrimPrefix(im.ID, "sha256:")] ||
			slices.ContainsFunc(im.RepoTags, func(t string) bool { return keep[t] }) {
			continue
		}
		item := GCItem{Kind: "image", ID: im.ID, Name: firstOr(im.RepoTags, im.ID), Bytes: im.Size}
		if !dry {
			// No force: dockerd itself refuses an image a container still uses (409).
			// An image with several tags is removed tag by tag (by ID it would need force).
			refs := []string{im.ID}
			if tags := realTags(im.RepoTags); len(tags) > 1 {
				refs = tags
			}
			for _, ref := range refs {
				if err := g.call(ctx, http.MethodDelete, "/images/"+url.PathEscape(ref)+"?force=0&noprune=0", nil); err != nil {
					return done, err
				}
			}
		}
		done = append(done, item)
	}
	return done, nil
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

func realTags(tags []string) []string {
	var out []string
	for _, t := range tags {
		if t != "<none>:<none>" {
			out = append(out, t)
		}
	}
	return out
}
