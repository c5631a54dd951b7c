package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// dockerDataRoot reads data-root (or the legacy graph, as in the 1.7-era incident) from
// daemon.json. found is false when the file does not exist.
func dockerDataRoot(path string) (root string, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read docker config: %w", err)
	}
	var cfg struct {
		DataRoot string `json:"data-root"`
		Graph    string `json:"graph"`
	}
	if len(strings.TrimSpace(string(data))) > 0 {
		if err := json.Unmarshal(data, &cfg); err != nil {
			return "", true, fmt.Errorf("parse %s: %w", path, err)
		}
	}
	switch {
	case cfg.DataRoot != "":
		return cfg.DataRoot, true, nil
	case cfg.Graph != "":
		return cfg.Graph, true, nil
	}
	return "", true, nil
}

// tomlString finds `key = "value"` in [table] ("" = top level) of a TOML file. This is not a
// TOML parser: containerd's `root` and CRI-O's `graphroot` are plain strings, and a full
// parser is a dependency for two lines. found is false when the file or key is absent.
func tomlString(path, table, key string) (value string, found bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			cur = strings.Trim(strings.TrimSpace(strings.SplitN(line, "#", 2)[0]), "[] \t")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || cur != table || strings.Trim(strings.TrimSpace(k), `"'`) != key {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
			if end := strings.IndexByte(v[1:], v[0]); end >= 0 {
				return v[1 : end+1], true, nil
			}
		}
		return "", false, fmt.Errorf("%s: %s.%s is not a string: %q", path, table, key, v)
	}
	if err := sc.Err(); err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	return "", false, nil
}

// dockerRootDir asks a running dockerd (GET /info over its unix socket) for DockerRootDir.
func dockerRootDir(ctx context.Context, socket string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", fmt.Errorf("docker API %s: %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", fmt.Errorf("docker API %s: %w", socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("docker API %s: GET /info: %s", socket, resp.Status)
	}
	var info struct {
		DockerRootDir string
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("docker API %s: decode /info: %w", socket, err)
	}
	if info.DockerRootDir == "" {
		return "", fmt.Errorf("docker API %s: /info has no DockerRootDir", socket)
	}
	return info.DockerRootDir, nil
}

// criFsInfo is what CRI ImageFsInfo says about where images and containers live.
type criFsInfo struct {
	ImageMountpoint     string
	ContainerMountpoint string // "" unless the runtime reports a separate container fs
}

// criImageFsInfo calls CRI ImageFsInfo over a unix socket, as the kubelet's CRI stats
// provider does, and takes the first entry of each list, as it does.
func criImageFsInfo(ctx context.Context, socket string, timeout time.Duration) (criFsInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return criFsInfo{}, fmt.Errorf("CRI %s: %w", socket, err)
	}
	defer conn.Close()
	resp, err := runtimeapi.NewImageServiceClient(conn).ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return criFsInfo{}, fmt.Errorf("CRI %s: ImageFsInfo: %w", socket, err)
	}
	var info criFsInfo
	if fs := resp.GetImageFilesystems(); len(fs) > 0 {
		info.ImageMountpoint = fs[0].GetFsId().GetMountpoint()
	}
	if fs := resp.GetContainerFilesystems(); len(fs) > 0 {
		info.ContainerMountpoint = fs[0].GetFsId().GetMountpoint()
	}
	if info.ImageMountpoint == "" {
		return info, fmt.Errorf("CRI %s: ImageFsInfo reported no image filesystem", socket)
	}
	return info, nil
}

// socketPath turns a CRI endpoint ("unix:///run/containerd/containerd.sock" or a bare path)
// into a socket path; other schemes are not supported.
func socketPath(endpoint string) (string, error) {
	if p, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		return p, nil
	}
	if strings.HasPrefix(endpoint, "/") {
		return endpoint, nil
	}
	return "", fmt.Errorf("unsupported CRI endpoint %q (only unix sockets)", endpoint)
}
