package kubeletcfg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// Options say where to look; zero values mean "discover".
type Options struct {
	// HostRoot is where the node's "/" is visible. Every path the kubelet uses (in its
	// command line, its unit, its config) is a node path resolved under it.
	HostRoot hostfs.Root
	// Cmdline overrides discovery with the kubelet's arguments, with or without argv[0].
	// nil means: the running kubelet's /proc/<pid>/cmdline, else kubelet.service.
	Cmdline []string
	// Version overrides the kubelet version ("1.37", "v1.37.2"); "" runs kubelet --version.
	Version string
	// ConfigzURL is a /configz URL or a file holding a /configz answer; "" skips the check.
	ConfigzURL   string
	ConfigzToken string
	// ConfigzAPIServer, when set, reads /configz through the API server's node proxy
	// instead of ConfigzURL.
	ConfigzAPIServer *APIServerConfigz
	// NodeName is this node's name ($NODE_NAME in the DaemonSet). When several kubelet
	// processes are visible (a leftover, kubelets of nested clusters such as kind's), the
	// one registered under this name (--hostname-override) is the node's.
	NodeName string
	Logger   *slog.Logger
}

// Effective is the kubelet's effective eviction configuration.
type Effective struct {
	// KubeletFound is true when a kubelet process or unit was found (or Cmdline was given).
	KubeletFound bool
	// Version is "1.37.2", or "1.37" when only the minor is known or assumed.
	Version               string
	ConfigFile, ConfigDir string
	// RootDir is --root-dir (default /var/lib/kubelet); the filesystem holding it is nodefs.
	RootDir                  string
	ContainerRuntimeEndpoint string
	// Thresholds are the thresholds the kubelet enforces: hard then soft, memory first.
	// Disabled signals ("0%", "100%") and containerfs.* (which the kubelet rewrites) are not
	// listed; allocatableMemory.available, which the kubelet adds, is.
	Thresholds []Threshold
	// IgnoredContainerFs are the configured containerfs.* thresholds, which the kubelet
	// replaces with copies of nodefs.* or imagefs.* (KEP-4191); not in Thresholds.
	IgnoredContainerFs       []Threshold
	PressureTransitionPeriod time.Duration
	// Cgroups says where the kubelet's pods cgroup is (allocatableMemory.available).
	Cgroups Cgroups
	// Sources are the files and processes consulted, in order.
	Sources  []string
	Warnings []string
	// Mismatches are differences from /configz (empty when not checked or equal).
	Mismatches []string
	// ConfigzSource names the /configz compared with ("configz URL", "configz (apiserver
	// proxy …)"); "" when not checked.
	ConfigzSource string
}

// kubeadmConfigFile is where kubeadm puts the kubelet's config (kubeadm constants.go
// KubeletConfigurationFileName); assumed when no kubelet is found.
const kubeadmConfigFile = "/var/lib/kubelet/config.yaml"

// conventionalDropInDir is the drop-in directory the Kubernetes docs use; it has no effect
// unless the kubelet is given --config-dir (no default in 1.30–1.37).
const conventionalDropInDir = "/etc/kubernetes/kubelet.conf.d"

// defaultTransition is evictionPressureTransitionPeriod's default; 0 also means 5m
// (v1beta1 SetDefaults_KubeletConfiguration).
const defaultTransition = 5 * time.Minute

// Discover computes the kubelet's effective eviction settings following the kubelet's own
// order (k/k@v1.37.2:cmd/kubelet/app/server.go NewKubeletCommand): flags; the --config file
// with evictionHard defaulted or merged (loadConfigFile); --config-dir drop-ins merged with
// RFC 7386 (mergeKubeletConfigurations); the flags again, each map flag replacing its map
// (kubeletConfigFlagPrecedence); then ParseThresholdConfig. Problems with what is on the node
// are *InputError.
func Discover(ctx context.Context, opts Options) (*Effective, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &resolver{root: opts.HostRoot, log: log, eff: &Effective{}}
	if r.root == "" {
		r.root = "/"
	}
	if err := r.run(ctx, opts); err != nil {
		return nil, err
	}
	return r.eff, nil
}

type resolver struct {
	root hostfs.Root
	log  *slog.Logger
	eff  *Effective
}

func (r *resolver) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.log.Debug("kubelet config warning", "msg", msg)
	r.eff.Warnings = append(r.eff.Warnings, msg)
}

func (r *resolver) source(s ...string) {
	for _, x := range s {
		if !slices.Contains(r.eff.Sources, x) {
			r.eff.Sources = append(r.eff.Sources, x)
		}
	}
}

func (r *resolver) run(ctx context.Context, opts Options) error {
	eff := r.eff
	argv0, args, exe, cwd, err := r.commandLine(opts)
	if err != nil {
		return err
	}
	v, err := r.version(ctx, opts, argv0, exe)
	if err != nil {
		return err
	}
	eff.Version = v.String()
	tag := "kubelet " + v.short()

	kf, err := parseKubeletFlags(v, args)
	if err != nil {
		return err
	}
	if legacyGrammar(v) {
		if err := kf.legacyMaps(); err != nil {
			return err
		}
	}
	for _, p := range kf.positional {
		r.warn("%s: unexpected argument %q on the kubelet command line; the kubelet refuses to start with it", p.o.String(), p.s)
	}
	eff.RootDir = absUnder(cwd, kf.rootDir)

	var (
		m          evictionMaps
		transition time.Duration
		enforce    = []string{"pods"}
		kc         = &kubeletv1beta1.KubeletConfiguration{}
		haveConfig bool
	)
	if kf.config != "" && !v.AtLeast(10) {
		r.warn("--config is ignored: kubelet %s predates the config file (1.10)", v.short())
		kf.config = ""
	}
	if kf.config != "" {
		eff.ConfigFile = absUnder(cwd, kf.config)
		doc, err := readConfigDoc(r.root, eff.ConfigFile)
		var ie *InputError
		switch {
		case err != nil && !eff.KubeletFound && errors.As(err, &ie) && errors.Is(err, fs.ErrNotExist):
			// No kubelet: show what a kubeadm-style kubelet would enforce.
			m.hard = defaultsEntries(v, tag+", no kubelet found; kubeadm-style "+eff.ConfigFile+" assumed")
		case err != nil:
			return err
		default:
			haveConfig = true
			r.source(eff.ConfigFile)
			dec, warns, err := decodeConfig(doc.json, doc.file, doc.pos)
			if err != nil {
				return err
			}
			for _, w := range warns {
				r.warn("%s", w)
			}
			kc = dec
			m = mapsFromDoc(kc, doc)
			r.defaultHard(v, tag, kc, doc, &m)
			transition = kc.EvictionPressureTransitionPeriod.Duration
			if kc.EnforceNodeAllocatable != nil {
				enforce = kc.EnforceNodeAllocatable
			}
			eff.ContainerRuntimeEndpoint = kc.ContainerRuntimeEndpoint
		}
	} else {
		// Flags only: the flag-built configuration.
		m = evictionMaps{hard: kf.hard, soft: kf.soft, grace: kf.grace, reclaim: kf.reclaim}
		if m.hard == nil {
			if flagsOnlyHasDefaults(v) {
				m.hard = defaultsEntries(v, tag+", no --config and no --eviction-hard")
			} else if kf.configDir == "" {
				r.warn("the kubelet runs without --config and without --eviction-hard: kubelet ≥1.26 then enforces NO hard eviction thresholds (k/k PR #110263)")
			}
		}
		transition = kf.transition
	}

	if kf.configDir != "" {
		if err := r.dropIns(v, cwd, kf, kc, &m, &transition, &enforce); err != nil {
			return err
		}
	} else if files, _ := dropInFiles(r.root, conventionalDropInDir); len(files) > 0 {
		r.warn("%s has drop-ins (%s) but the kubelet has no --config-dir, so they are ignored", conventionalDropInDir, strings.Join(files, ", "))
	}

	// Flags are re-applied last when a config file or drop-in dir is used; each map flag
	// replaces the whole map.
	if kf.config != "" || kf.configDir != "" {
		r.applyFlags(v, tag, kf, haveConfig, &m)
		if kf.has(flagEvictionTransition) {
			transition = kf.transition
		}
	} else if o, ok := kf.set[flagEvictionHard]; ok && flagsOnlyHasDefaults(v) {
		// Flags only: before 1.26 the flag replaced the defaults; from 1.26 there are none.
		r.warnDroppedDefaults(v, o.String(), m.hard)
	}
	if kf.has(flagEnforceAllocatable) {
		enforce = kf.enforceAllocable
	}
	if kf.runtimeEndpoint != "" {
		eff.ContainerRuntimeEndpoint = kf.runtimeEndpoint
	}
	if eff.ContainerRuntimeEndpoint == "" && v.AtLeast(27) {
		eff.ContainerRuntimeEndpoint = "unix:///run/containerd/containerd.sock"
	}
	if transition == 0 {
		transition = defaultTransition
	}
	eff.PressureTransitionPeriod = transition
	eff.Cgroups = cgroupsOf(kc, kf)

	ts, err := parseThresholds(v, m, slices.Contains(enforce, "pods"))
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.Signal == SignalContainerFsAvailable || t.Signal == SignalContainerFsInodesFree {
			r.warn("%s %s<%s from %s is ignored: the kubelet replaces containerfs.* with a copy of the nodefs.* or imagefs.* threshold (KEP-4191)", t.Kind, t.Signal, t.Raw, t.Source)
			eff.IgnoredContainerFs = append(eff.IgnoredContainerFs, t)
			continue
		}
		if p := t.Value.Percentage; p != p {
			r.warn("%s %s<%s from %s: the kubelet accepts NaN%% but the threshold can never be met", t.Kind, t.Signal, t.Raw, t.Source)
		}
		eff.Thresholds = append(eff.Thresholds, t)
	}

	if opts.ConfigzURL != "" || opts.ConfigzAPIServer != nil {
		cz, src, err := liveConfigz(ctx, opts)
		if err != nil {
			return err
		}
		r.source(src)
		eff.ConfigzSource = src
		eff.Mismatches = compareConfigz(cz, m, transition)
		if len(eff.Mismatches) > 0 {
			r.warn("%d difference(s) between the computed settings and the kubelet's /configz; the live values win", len(eff.Mismatches))
		}
	}
	return nil
}

// commandLine finds the kubelet's arguments: the override, the running process, or the unit.
// exe is a path on this machine to run for --version ("" to search for argv0).
func (r *resolver) commandLine(opts Options) (argv0 string, args []word, exe, cwd string, err error) {
	eff := r.eff
	cwd = "/"
	if opts.Cmdline != nil {
		a := opts.Cmdline
		if len(a) > 0 && !strings.HasPrefix(a[0], "-") {
			argv0, a = a[0], a[1:]
		}
		eff.KubeletFound = true
		r.source("--kubelet-cmdline")
		return argv0, wordsOf(a, origin{file: "--kubelet-cmdline"}), "", cwd, nil
	}
	procs := findKubeletProcesses(r.root)
	u, uerr := readUnit(r.root)
	if len(procs) > 1 && opts.NodeName != "" {
		if named := slices.DeleteFunc(slices.Clone(procs), func(p kubeletProcess) bool {
			return hostnameOverride(p.argv[1:]) != opts.NodeName
		}); len(named) > 0 {
			procs = named
		}
	}
	if len(procs) > 0 {
		p := procs[0]
		if len(procs) > 1 {
			// The kubelet is the one kubelet.service runs: prefer the process whose command
			// line is closest to what the unit gives (equal, or differing by a change not yet
			// restarted into); another may be a leftover or a test's.
			if u != nil && uerr == nil {
				best := -1
				for _, q := range procs {
					if c := commonArgs(u.argv[1:], q.argv[1:]); c > best {
						p, best = q, c
					}
				}
			}
			r.warn("%d kubelet processes found; using PID %d", len(procs), p.pid)
		}
		eff.KubeletFound = true
		src := fmt.Sprintf("/proc/%d/cmdline", p.pid)
		r.source(src)
		args = wordsOf(p.argv[1:], origin{file: src})
		if p.cwd != "" {
			cwd = p.cwd
		}
		switch {
		case uerr != nil:
			r.warn("the kubelet unit is broken (%v); the running kubelet will not come back after a restart", uerr)
		case u != nil && sameArgs(u.argv[1:], p.argv[1:]):
			// Same command line: point at the files it came from.
			args = u.argv[1:]
			r.source(u.files...)
			r.source(u.envFiles...)
			r.eff.Warnings = append(r.eff.Warnings, u.warnings...)
		case u != nil:
			r.warn("the running kubelet (PID %d) has a different command line than %s now gives; the unit's settings take effect at the next restart", p.pid, strings.Join(u.files, ", "))
		}
		return p.argv[0], args, r.root.Path(fmt.Sprintf("/proc/%d/exe", p.pid)), cwd, nil
	}
	if uerr != nil {
		return "", nil, "", "", uerr
	}
	if u != nil {
		eff.KubeletFound = true
		r.source(u.files...)
		r.source(u.envFiles...)
		r.eff.Warnings = append(r.eff.Warnings, u.warnings...)
		if len(u.argv) == 0 {
			return "", nil, "", cwd, nil
		}
		return u.argv[0].s, u.argv[1:], "", cwd, nil
	}
	r.warn("no kubelet found (no kubelet process under %s, no kubelet.service); showing the defaults of a kubeadm-style kubelet", r.root.Path("/proc"))
	return "", []word{{s: "--config=" + kubeadmConfigFile, o: origin{file: "assumed"}}}, "", cwd, nil
}

// commonArgs counts the arguments of b that also occur in a.
func commonArgs(a []word, b []string) int {
	in := make(map[string]bool, len(a))
	for _, w := range a {
		in[w.s] = true
	}
	n := 0
	for _, s := range b {
		if in[s] {
			n++
		}
	}
	return n
}

func sameArgs(a []word, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].s != b[i] {
			return false
		}
	}
	return true
}

// version returns the override, else asks the binary, else DefaultKubeletVersion.
func (r *resolver) version(ctx context.Context, opts Options, argv0, exe string) (Version, error) {
	if opts.Version != "" {
		v, err := ParseVersion(opts.Version)
		if err != nil {
			return Version{}, &InputError{Msg: err.Error(), Err: err}
		}
		return v, nil
	}
	why := "no kubelet found"
	if r.eff.KubeletFound {
		bin := exe
		if _, err := os.Stat(bin); (bin == "" || err != nil) && argv0 != "" {
			// /proc/PID/exe needs ptrace access to the kubelet, which a container without
			// CAP_SYS_PTRACE lacks: the path it was started as, under the host root, then.
			bin = r.findBinary(argv0)
		}
		if bin != "" {
			if _, err := os.Stat(bin); err == nil {
				v, err := kubeletVersionOf(ctx, bin)
				if err == nil {
					return v, nil
				}
				why = err.Error()
				// A binary that cannot run here (a container without the host's libc, its
				// loader missing) still carries its version in its Go build information.
				if v, berr := kubeletVersionFromBuildInfo(bin); berr == nil {
					return v, nil
				}
			} else {
				why = fmt.Sprintf("%s not found", argv0)
			}
		} else {
			why = "kubelet binary not known"
		}
	}
	r.warn("kubelet version unknown (%s); assuming %s, the version evictguard is tested against (use --kubelet-version)", why, DefaultKubeletVersion)
	return mustVersion(DefaultKubeletVersion), nil
}

func (r *resolver) findBinary(argv0 string) string {
	if strings.Contains(argv0, "/") {
		return r.root.Path(argv0)
	}
	for _, d := range []string{"/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/opt/bin"} {
		p := r.root.Path(filepath.Join(d, argv0))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func absUnder(cwd, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(cwd, p)
}

func defaultsEntries(v Version, why string) emap {
	out := emap{}
	for k, val := range DefaultEvictionHard(v, runtime.GOOS) {
		out[k] = entry{val: val, def: why}
	}
	return out
}

// defaultHard applies loadConfigFile's rule: no evictionHard → the defaults; on 1.33+ with
// mergeDefaultEvictionSettings, missing keys are filled in; otherwise a partial map stands
// alone, which is worth a warning.
func (r *resolver) defaultHard(v Version, tag string, kc *kubeletv1beta1.KubeletConfiguration, doc *configDoc, m *evictionMaps) {
	merge := kc.MergeDefaultEvictionSettings != nil && *kc.MergeDefaultEvictionSettings
	if merge && !mergeDefaultsSupported(v) {
		r.warn("%s:%d: mergeDefaultEvictionSettings needs kubelet ≥1.33; kubelet %s ignores it (unknown field)", doc.file, doc.pos[fieldMerge], v.short())
		merge = false
	}
	switch {
	case m.hard == nil:
		m.hard = defaultsEntries(v, tag+", no evictionHard in "+doc.file)
	case merge:
		for k, val := range DefaultEvictionHard(v, runtime.GOOS) {
			if _, ok := m.hard[k]; !ok {
				m.hard[k] = entry{val: val, def: fmt.Sprintf("%s, merged by mergeDefaultEvictionSettings at %s:%d", tag, doc.file, doc.pos[fieldMerge])}
			}
		}
	default:
		r.warnDroppedDefaults(v, fmt.Sprintf("evictionHard at %s:%d", doc.file, doc.pos[fieldHard]), m.hard)
	}
}

// warnDroppedDefaults names the default signals a partial map leaves unenforced.
func (r *resolver) warnDroppedDefaults(v Version, where string, hard emap) {
	def := DefaultEvictionHard(v, runtime.GOOS)
	var missing []string
	for _, k := range sortedKeys(def) {
		if _, ok := hard[k]; !ok {
			missing = append(missing, k+"<"+def[k])
		}
	}
	if len(missing) == 0 {
		return
	}
	hint := "list them too"
	if mergeDefaultsSupported(v) {
		hint = "list them too, or set mergeDefaultEvictionSettings: true in the --config file"
	}
	r.warn("%s replaces the whole default map: the kubelet's defaults %s are NOT enforced (%s)", where, strings.Join(missing, ", "), hint)
}

// applyFlags is kubeletConfigFlagPrecedence for the eviction flags.
func (r *resolver) applyFlags(v Version, tag string, kf *kubeletFlags, haveConfig bool, m *evictionMaps) {
	for _, f := range []struct {
		name string
		dst  *emap
		val  emap
	}{
		{flagEvictionHard, &m.hard, kf.hard},
		{flagEvictionSoft, &m.soft, kf.soft},
		{flagEvictionGrace, &m.grace, kf.grace},
		{flagEvictionReclaim, &m.reclaim, kf.reclaim},
	} {
		o, ok := kf.set[f.name]
		if !ok {
			continue
		}
		if haveConfig || len(*f.dst) > 0 {
			r.warn("%s replaces the whole %s map of the config file and drop-ins; edits there have no effect while the flag is set", o.String(), fieldOfFlag(f.name))
		}
		val := f.val
		if val == nil {
			val = emap{}
		}
		*f.dst = val.clone()
		if f.name == flagEvictionHard {
			r.warnDroppedDefaults(v, o.String(), val)
		}
	}
}

func fieldOfFlag(name string) string {
	switch name {
	case flagEvictionHard:
		return fieldHard
	case flagEvictionSoft:
		return fieldSoft
	case flagEvictionGrace:
		return fieldGrace
	}
	return fieldReclaim
}

// dropIns merges the --config-dir files onto the configuration so far.
func (r *resolver) dropIns(v Version, cwd string, kf *kubeletFlags, kc *kubeletv1beta1.KubeletConfiguration, m *evictionMaps, transition *time.Duration, enforce *[]string) error {
	dir := absUnder(cwd, kf.configDir)
	r.eff.ConfigDir = dir
	switch {
	case !v.AtLeast(28):
		r.warn("--config-dir needs kubelet ≥1.28; kubelet %s refuses to start with it (unknown flag)", v.short())
		return nil
	case !v.AtLeast(30):
		r.warn("--config-dir is alpha in kubelet %s and only works with KUBELET_CONFIG_DROPIN_DIR_ALPHA set; assuming it is", v.short())
	}
	base := *kc
	base.EvictionHard, base.EvictionSoft = m.hard.plain(), m.soft.plain()
	base.EvictionSoftGracePeriod, base.EvictionMinimumReclaim = m.grace.plain(), m.reclaim.plain()
	base.EvictionPressureTransitionPeriod.Duration = *transition
	if base.EnforceNodeAllocatable == nil {
		base.EnforceNodeAllocatable = *enforce
	}
	j, err := json.Marshal(&base)
	if err != nil {
		return fmt.Errorf("marshal base kubelet config: %w", err)
	}
	files, err := dropInFiles(r.root, dir)
	if err != nil {
		return err
	}
	var to origin
	for _, f := range files {
		doc, err := readConfigDoc(r.root, f)
		if err != nil {
			return err
		}
		r.source(f)
		if _, ok := doc.pos[fieldMerge]; ok {
			r.warn("%s:%d: mergeDefaultEvictionSettings in a drop-in has no effect; it only works in the main --config file", f, doc.pos[fieldMerge])
		}
		if j, err = applyDropIn(j, doc, m, &to); err != nil {
			return err
		}
	}
	merged, warns, err := decodeConfig(j, dir, nil)
	if err != nil {
		return err
	}
	for _, w := range warns {
		r.warn("%s", w)
	}
	*m = syncMaps(merged, *m, origin{file: dir})
	// The rest of the merged configuration (cgroup settings) is what the kubelet runs with.
	*kc = *merged
	*transition = merged.EvictionPressureTransitionPeriod.Duration
	if merged.EnforceNodeAllocatable != nil {
		*enforce = merged.EnforceNodeAllocatable
	}
	if merged.ContainerRuntimeEndpoint != "" {
		r.eff.ContainerRuntimeEndpoint = merged.ContainerRuntimeEndpoint
	}
	return nil
}
