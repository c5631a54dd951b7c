package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// Runtimes DiscoverFilesystems knows.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "crio"
)

// Defaults of the kubelet and the runtimes (node paths).
const (
	DefaultKubeletRootDir = "/var/lib/kubelet"
	DefaultPodLogsDir     = "/var/log/pods"
	defaultDockerSocket   = "/var/run/docker.sock"
	defaultDockerConfig   = "/etc/docker/daemon.json"
	defaultDockerRoot     = "/var/lib/docker"
	defaultContainerdConf = "/etc/containerd/config.toml"
	defaultContainerdRoot = "/var/lib/containerd"
	defaultContainerdSock = "/run/containerd/containerd.sock"
	defaultCRIOStorage    = "/etc/containers/storage.conf"
	defaultCRIOGraphRoot  = "/var/lib/containers/storage"
	defaultCRIOSock       = "/var/run/crio/crio.sock"
	containerdSnapshotter = "io.containerd.snapshotter.v1.overlayfs"
)

// DiscoverOptions says where to look. Config and directory paths are node paths, read under
// HostRoot. Socket paths given explicitly (DockerSocket, CRIEndpoint) are used as this
// process sees them, so a test can point at a sandboxed daemon; the defaults are looked up
// under HostRoot.
type DiscoverOptions struct {
	HostRoot hostfs.Root
	// KubeletRootDir is the kubelet's --root-dir; "" means /var/lib/kubelet, or / when that
	// does not exist (no kubelet on this machine).
	KubeletRootDir string
	// Runtime forces docker, containerd or crio; "" detects it (CRIEndpoint's name, then
	// whichever runtime answers or is configured).
	Runtime string
	// CRIEndpoint is the kubelet's --container-runtime-endpoint ("unix:///…" or a path).
	CRIEndpoint string
	// DockerSocket is dockerd's API socket (default /var/run/docker.sock under HostRoot).
	DockerSocket string
	// DockerConfig, ContainerdConfig and CRIOStorageConfig override the runtime config files.
	DockerConfig, ContainerdConfig, CRIOStorageConfig string
	// PodLogsDir is the kubelet's podLogsDir (default /var/log/pods).
	PodLogsDir string
	// ExtraLogDirs are log-pipeline directories (fluentd buffers, pos files) to account for.
	ExtraLogDirs []string
	// Timeout bounds each runtime API call (default 2s).
	Timeout time.Duration
	// MountInfo is the mount table to read (default /proc/self/mountinfo).
	MountInfo string
	Logger    *slog.Logger
}

// Layout is the node's filesystems as the kubelet sees them.
type Layout struct {
	// Runtime is docker, containerd, crio or "" when none was found.
	Runtime string `json:"runtime"`
	// CRISocket is the CRI socket found for a CRI runtime (containerd, crio), as this
	// process can connect to it; "" when none (docker uses its Engine API socket).
	CRISocket string `json:"criSocket,omitempty"`
	// Filesystems has one nodefs, one imagefs, at most one containerfs and one entry per log
	// directory, in that order.
	Filesystems []Filesystem `json:"filesystems"`
	// DedicatedImageFs is the kubelet's HasDedicatedImageFs: imagefs is on another device.
	DedicatedImageFs bool `json:"dedicatedImageFs"`
	// SplitContainerFs: the runtime reports containers on another filesystem than images.
	SplitContainerFs bool     `json:"splitContainerFs"`
	Warnings         []string `json:"warnings,omitempty"`
}

// ByRole returns the first filesystem with the role, or nil.
func (l *Layout) ByRole(r Role) *Filesystem {
	for i := range l.Filesystems {
		if l.Filesystems[i].Role == r {
			return &l.Filesystems[i]
		}
	}
	return nil
}

// DiscoverFilesystems finds nodefs (the filesystem of the kubelet root dir), imagefs (the
// runtime's image store: CRI ImageFsInfo when the socket answers, else the runtime's config),
// containerfs and the log directories, and which of them share a device.
func DiscoverFilesystems(ctx context.Context, opts DiscoverOptions) (*Layout, error) {
	d := &discoverer{opts: opts, root: opts.HostRoot, log: opts.Logger}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if d.opts.Timeout <= 0 {
		d.opts.Timeout = 2 * time.Second
	}
	return d.run(ctx)
}

type discoverer struct {
	opts   DiscoverOptions
	root   hostfs.Root
	log    *slog.Logger
	layout Layout
	mounts []mountEntry
}

func (d *discoverer) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.log.Debug(msg) // the caller decides how to report Layout.Warnings
	d.layout.Warnings = append(d.layout.Warnings, msg)
}

func (d *discoverer) exists(nodePath string) bool {
	_, err := os.Stat(d.root.Path(nodePath))
	return err == nil
}

func (d *discoverer) run(ctx context.Context) (*Layout, error) {
	mounts, err := readMounts(d.opts.MountInfo)
	if err != nil {
		d.warn("mountpoints and devices unknown: %v", err)
	}
	d.mounts = mounts

	// nodefs
	rootDir, src := d.opts.KubeletRootDir, "kubelet --root-dir"
	if rootDir == "" {
		rootDir, src = DefaultKubeletRootDir, "default"
		if !d.exists(rootDir) {
			d.warn("%s does not exist (no kubelet here?): using / as nodefs", rootDir)
			rootDir, src = "/", "no kubelet root dir"
		}
	}
	nodefs, err := d.filesystem(RoleNodeFs, rootDir, src)
	if err != nil {
		return nil, fmt.Errorf("nodefs: %w", err)
	}
	d.layout.Filesystems = append(d.layout.Filesystems, nodefs)

	// imagefs (and containerfs)
	rt, imagePath, imageSrc, containerPath := d.imageFs(ctx)
	d.layout.Runtime = rt
	if imagePath == "" {
		d.warn("no container runtime found: imagefs signals are evaluated on nodefs")
		imagePath, imageSrc = rootDir, "no runtime: nodefs"
	}
	imagefs, err := d.filesystem(RoleImageFs, imagePath, imageSrc)
	if err != nil {
		d.warn("imagefs %s: %v; evaluating imagefs signals on nodefs", imagePath, err)
		imagefs = nodefs
		imagefs.Role, imagefs.Source = RoleImageFs, "fallback: nodefs"
	}
	d.layout.DedicatedImageFs = imagefs.Dev != nodefs.Dev
	if !d.layout.DedicatedImageFs {
		imagefs.SameAs = string(RoleNodeFs)
	}
	d.layout.Filesystems = append(d.layout.Filesystems, imagefs)

	containerfs := imagefs
	containerfs.Role, containerfs.SameAs = RoleContainerFs, string(RoleImageFs)
	if containerPath != "" && filepath.Clean(containerPath) != filepath.Clean(imagePath) {
		if c, err := d.filesystem(RoleContainerFs, containerPath, "CRI ImageFsInfo container_filesystems"); err != nil {
			d.warn("containerfs %s: %v", containerPath, err)
		} else if c.Dev != imagefs.Dev {
			containerfs = c
			d.layout.SplitContainerFs = true
			if c.Dev == nodefs.Dev {
				containerfs.SameAs = string(RoleNodeFs)
			}
		}
	}
	d.layout.Filesystems = append(d.layout.Filesystems, containerfs)

	// log directories
	for _, dir := range d.logDirs(rt, imagePath) {
		fs, err := d.filesystem(RoleLogs, dir.path, dir.source)
		if err != nil {
			if dir.explicit {
				d.warn("log dir %s: %v", dir.path, err)
			}
			continue
		}
		switch fs.Dev {
		case nodefs.Dev:
			fs.SameAs = string(RoleNodeFs)
		case imagefs.Dev:
			fs.SameAs = string(RoleImageFs)
		default:
			// The kubelet watches no signal on this filesystem (reference §5): say so once.
			d.warn("log dir %s is on %s, which no kubelet eviction signal watches", dir.path, fs.Mountpoint)
		}
		d.layout.Filesystems = append(d.layout.Filesystems, fs)
	}
	return &d.layout, nil
}

// filesystem resolves a node path to its device and mount.
func (d *discoverer) filesystem(role Role, nodePath, source string) (Filesystem, error) {
	nodePath = filepath.Clean("/" + nodePath)
	hp := d.root.Path(nodePath)
	dev, err := deviceOf(hp)
	if errors.Is(err, os.ErrNotExist) && role != RoleLogs {
		// A runtime root that does not exist yet will be created on its parent's filesystem.
		for p := filepath.Dir(nodePath); err != nil && errors.Is(err, os.ErrNotExist); p = filepath.Dir(p) {
			if hp = d.root.Path(p); p == "/" {
				dev, err = deviceOf(hp)
				break
			}
			dev, err = deviceOf(hp)
		}
		if err == nil {
			source += " (does not exist yet)"
		}
	}
	if err != nil {
		return Filesystem{}, err
	}
	fs := Filesystem{Role: role, Path: nodePath, HostPath: hp, Dev: dev, Source: source}
	major, minor := devMajorMinor(dev)
	// The mount table names mountpoints as this process sees them after symlinks (a host
	// root may reach a mount through one, as deviceOf's stat does); match on the resolved path.
	mp := hp
	if r, err := filepath.EvalSymlinks(hp); err == nil {
		mp = r
	}
	if m, ok := findMount(d.mounts, mp, major, minor); ok {
		fs.Mountpoint = d.root.NodePath(m.Mountpoint)
		fs.Device, fs.FsType = m.Source, m.FsType
	}
	return fs, nil
}

// imageFs decides the runtime and its image store. It returns node paths.
func (d *discoverer) imageFs(ctx context.Context) (rt, imagePath, source, containerPath string) {
	rt = d.opts.Runtime
	if rt == "" {
		rt = runtimeFromEndpoint(d.opts.CRIEndpoint)
	}

	// CRI first, as the kubelet does for every CRI runtime.
	if cri := d.criSocket(rt); cri != "" {
		info, err := criImageFsInfo(ctx, cri, d.opts.Timeout)
		switch {
		case err == nil:
			if rt == "" {
				rt = runtimeFromEndpoint(cri)
			}
			if rt != RuntimeDocker {
				d.layout.CRISocket = cri
			}
			return rt, info.ImageMountpoint, SourceCRI, info.ContainerMountpoint
		case d.opts.CRIEndpoint != "":
			d.warn("CRI endpoint %s did not answer (%v): falling back to the runtime's config", d.opts.CRIEndpoint, err)
		default:
			d.log.Debug("CRI socket did not answer", "socket", cri, "err", err)
		}
	}

	if rt == "" || rt == RuntimeDocker {
		if p, src, ok := d.dockerRoot(ctx, rt == RuntimeDocker); ok {
			return RuntimeDocker, p, src, ""
		}
	}
	if rt == "" || rt == RuntimeContainerd {
		if p, src, ok := d.containerdRoot(rt == RuntimeContainerd); ok {
			return RuntimeContainerd, p, src, ""
		}
	}
	if rt == "" || rt == RuntimeCRIO {
		if p, src, ok := d.crioRoot(rt == RuntimeCRIO); ok {
			return RuntimeCRIO, p, src, ""
		}
	}
	return rt, "", "", ""
}

// criSocket returns the socket to ask ImageFsInfo, as this process sees it, or "".
func (d *discoverer) criSocket(rt string) string {
	if d.opts.CRIEndpoint != "" {
		p, err := socketPath(d.opts.CRIEndpoint)
		if err != nil {
			d.warn("%v", err)
			return ""
		}
		// The kubelet's endpoint is a node path; a test's sandboxed socket exists only as given.
		if hp := d.root.Path(p); isSocket(hp) {
			return d.dialable(hp)
		}
		return p
	}
	var candidates []string
	switch rt {
	case RuntimeContainerd:
		candidates = []string{defaultContainerdSock}
	case RuntimeCRIO:
		candidates = []string{defaultCRIOSock}
	case "":
		candidates = []string{defaultContainerdSock, defaultCRIOSock}
	}
	for _, c := range candidates {
		if hp := d.root.Path(c); isSocket(hp) {
			return d.dialable(hp)
		}
	}
	return ""
}

// maxSocketPath is the longest path connect(2) takes for a unix socket (sun_path minus NUL).
const maxSocketPath = 107

// dialable returns a path to connect to the socket at hp: hp itself, or, when the host root
// prefix makes it longer than a unix socket address can be, the same socket with symlinks
// resolved (e.g. <host-root>/run → /run). Without this the CRI and docker sockets "do not
// answer" under a long --host-root, and imagefs silently falls back to the config defaults.
func (d *discoverer) dialable(hp string) string {
	if len(hp) <= maxSocketPath || !isSocket(hp) {
		return hp
	}
	if r, err := filepath.EvalSymlinks(hp); err == nil && len(r) <= maxSocketPath && isSocket(r) {
		return r
	}
	d.warn("socket path %s is longer than %d bytes: connecting to it will fail", hp, maxSocketPath)
	return hp
}

func (d *discoverer) dockerRoot(ctx context.Context, forced bool) (path, source string, ok bool) {
	cfgPath := d.opts.DockerConfig
	if cfgPath == "" {
		cfgPath = defaultDockerConfig
	}
	cfgRoot, cfgFound, err := dockerDataRoot(d.root.Path(cfgPath))
	if err != nil {
		d.warn("%v", err)
	}
	sock := d.opts.DockerSocket
	if sock == "" {
		sock = d.dialable(d.root.Path(defaultDockerSocket))
	}
	if isSocket(sock) {
		apiRoot, err := dockerRootDir(ctx, sock, d.opts.Timeout)
		if err == nil {
			if cfgRoot != "" && filepath.Clean(cfgRoot) != filepath.Clean(apiRoot) {
				d.warn("%s sets the data root to %s but the running dockerd uses %s (restart pending?)", cfgPath, cfgRoot, apiRoot)
			}
			return apiRoot, SourceDockerAPI, true
		}
		d.warn("docker socket %s did not answer: %v", sock, err)
	}
	switch {
	case cfgRoot != "":
		return cfgRoot, cfgPath + " data-root", true
	case cfgFound || forced || d.exists(defaultDockerRoot):
		return defaultDockerRoot, "default", true
	}
	return "", "", false
}

func (d *discoverer) containerdRoot(forced bool) (path, source string, ok bool) {
	cfgPath := d.opts.ContainerdConfig
	if cfgPath == "" {
		cfgPath = defaultContainerdConf
	}
	root, found, err := tomlString(d.root.Path(cfgPath), "", "root")
	if err != nil {
		d.warn("%v", err)
	}
	src := cfgPath + " root"
	if !found || root == "" {
		root, src = defaultContainerdRoot, "default"
		if !forced && !d.exists(root) && !d.exists(cfgPath) {
			return "", "", false
		}
	}
	// Without CRI, take the overlayfs snapshotter dir containerd reports as the image fs.
	if snap := filepath.Join(root, containerdSnapshotter); d.exists(snap) {
		return snap, src, true
	}
	return root, src, true
}

func (d *discoverer) crioRoot(forced bool) (path, source string, ok bool) {
	cfgPath := d.opts.CRIOStorageConfig
	if cfgPath == "" {
		cfgPath = defaultCRIOStorage
	}
	root, found, err := tomlString(d.root.Path(cfgPath), "storage", "graphroot")
	if err != nil {
		d.warn("%v", err)
	}
	if found && root != "" {
		return root, cfgPath + " graphroot", true
	}
	if forced || d.exists(defaultCRIOGraphRoot) {
		return defaultCRIOGraphRoot, "default", true
	}
	return "", "", false
}

type logDir struct {
	path, source string
	explicit     bool
}

// logDirs lists the directories logs grow in: /var/log, the pod logs dir, the targets of the
// /var/log/containers links, docker's per-container json logs and the configured extras.
func (d *discoverer) logDirs(rt, imagePath string) []logDir {
	podLogs := d.opts.PodLogsDir
	if podLogs == "" {
		podLogs = DefaultPodLogsDir
	}
	dirs := []logDir{{path: "/var/log", source: "default"}, {path: podLogs, source: "kubelet podLogsDir"}}
	if rt == RuntimeDocker {
		dirs = append(dirs, logDir{path: filepath.Join(imagePath, "containers"), source: "docker container logs"})
	}
	for _, t := range d.containerLinkDirs(dirs) {
		dirs = append(dirs, logDir{path: t, source: "/var/log/containers link targets"})
	}
	for _, x := range d.opts.ExtraLogDirs {
		dirs = append(dirs, logDir{path: x, source: "configured", explicit: true})
	}
	var out []logDir
	seen := map[string]bool{}
	for _, ld := range dirs {
		ld.path = filepath.Clean("/" + ld.path)
		if seen[ld.path] {
			continue
		}
		seen[ld.path] = true
		out = append(out, ld)
	}
	return out
}

// containerLinkDirs reads a bounded number of /var/log/containers links and returns the
// directories holding their targets that are not already below a known log dir.
func (d *discoverer) containerLinkDirs(known []logDir) []string {
	const maxLinks = 64
	f, err := os.Open(d.root.Path("/var/log/containers"))
	if err != nil {
		return nil
	}
	defer f.Close()
	ents, _ := f.ReadDir(maxLinks)
	var out []string
	for _, e := range ents {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		t, err := os.Readlink(d.root.Path(filepath.Join("/var/log/containers", e.Name())))
		if err != nil {
			continue
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join("/var/log/containers", t)
		}
		t = d.root.NodePath(filepath.Clean(t))
		covered := slices.ContainsFunc(known, func(k logDir) bool { return pathWithin(t, k.path) }) ||
			slices.ContainsFunc(out, func(k string) bool { return pathWithin(t, k) })
		if covered {
			continue
		}
		// <dir>/<pod or container>/<file>: account the dir two levels up.
		out = append(out, filepath.Dir(filepath.Dir(t)))
	}
	return out
}

func runtimeFromEndpoint(ep string) string {
	switch {
	case ep == "":
		return ""
	case strings.Contains(ep, "containerd"):
		return RuntimeContainerd
	case strings.Contains(ep, "crio"):
		return RuntimeCRIO
	case strings.Contains(ep, "docker"):
		return RuntimeDocker
	}
	return ""
}

func isSocket(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}
