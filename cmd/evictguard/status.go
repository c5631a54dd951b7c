package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
)

// monitorFlags are the discovery and evaluation settings `status` and `run` share.
type monitorFlags struct {
	// cfg holds every setting that has a file key: the flags are bound to its fields.
	cfg *config.Configuration
}

func (f *monitorFlags) addFlags(fs *pflag.FlagSet) {
	if f.cfg == nil {
		f.cfg = config.Default()
	}
	if f.cfg.Kubernetes.NodeName == "" {
		f.cfg.Kubernetes.NodeName = os.Getenv("NODE_NAME") // the default of --node-name
	}
	b := binder{fs}
	b.str(&f.cfg.Monitor.KubeletCmdline, "monitor.kubeletCmdline", "kubelet-cmdline", "kubelet arguments to use instead of discovery (shell-like quoting)")
	b.str(&f.cfg.Monitor.KubeletVersion, "monitor.kubeletVersion", "kubelet-version", "kubelet version X.Y (default: ask the kubelet binary)")
	b.str(&f.cfg.Monitor.Runtime, "monitor.runtime", "runtime", "container runtime: docker, containerd or crio (default: detect)")
	b.str(&f.cfg.Monitor.CRIEndpoint, "monitor.criEndpoint", "cri-endpoint", "CRI socket to ask ImageFsInfo (default: the kubelet's --container-runtime-endpoint)")
	b.str(&f.cfg.Monitor.DockerSocket, "monitor.dockerSocket", "docker-socket", "dockerd API socket (default /var/run/docker.sock under --host-root)")
	b.strs(&f.cfg.Monitor.LogDirs, "monitor.logDirs", "log-dir", "extra log-pipeline directory to account for, e.g. a fluentd buffer (repeatable; node path)")
	b.dur(&f.cfg.Monitor.WarnHorizon.Duration, "monitor.warnHorizon", "warn-horizon", "warn when a threshold is predicted within this time")
	b.float(&f.cfg.Monitor.WarnMargin, "monitor.warnMargin", "warn-margin", "warn when headroom is below this fraction of capacity")
	b.dur(&f.cfg.Monitor.StatfsTimeout.Duration, "monitor.statfsTimeout", "statfs-timeout", "timeout of each statfs (a hung mount is reported, not waited for)")
}

func (f *monitorFlags) validate() error {
	switch f.cfg.Monitor.Runtime {
	case "", monitor.RuntimeDocker, monitor.RuntimeContainerd, monitor.RuntimeCRIO:
	default:
		return fmt.Errorf("--runtime must be docker, containerd or crio, not %q", f.cfg.Monitor.Runtime)
	}
	if f.cfg.Monitor.WarnMargin < 0 || f.cfg.Monitor.WarnMargin >= 1 {
		return fmt.Errorf("--warn-margin must be in [0, 1), not %v", f.cfg.Monitor.WarnMargin)
	}
	if f.cfg.Monitor.WarnHorizon.Duration <= 0 || f.cfg.Monitor.StatfsTimeout.Duration <= 0 {
		return errors.New("--warn-horizon and --statfs-timeout must be positive")
	}
	return nil
}

// setup is what status and run share: the effective thresholds, the filesystem layout and a
// Monitor over them.
type setup struct {
	eff     *kubeletcfg.Effective
	layout  *monitor.Layout
	monitor *monitor.Monitor
	// discover are the options the layout was discovered with (for rediscover).
	discover monitor.DiscoverOptions
}

// rediscover discovers the filesystems again with the same options and hands the layout to
// the monitor: after evictguard moved the runtime's data root, imagefs is its own
// filesystem, which the kubelet (restarted by the migration) already knows.
func (s *setup) rediscover(ctx context.Context, log *slog.Logger) error {
	l, err := monitor.DiscoverFilesystems(ctx, s.discover)
	if err != nil {
		return fmt.Errorf("re-discover filesystems: %w", err)
	}
	if err := s.monitor.SetLayout(l); err != nil {
		return fmt.Errorf("re-discover filesystems: %w", err)
	}
	img := l.ByRole(monitor.RoleImageFs)
	imgPath := ""
	if img != nil {
		imgPath = img.Path
	}
	log.Info("filesystems re-discovered", "runtime", l.Runtime, "imagefs", imgPath, "dedicatedImageFs", l.DedicatedImageFs,
		"thresholds", len(s.monitor.Thresholds()))
	return nil
}

// withKubelet completes discovery options with what the kubelet's settings say: its root dir
// (nodefs) and, unless given, its CRI endpoint (imagefs). With no kubelet,
// DiscoverFilesystems picks /var/lib/kubelet if it exists, else /.
func withKubelet(o *monitor.DiscoverOptions, eff *kubeletcfg.Effective) {
	if !eff.KubeletFound {
		return
	}
	o.KubeletRootDir = eff.RootDir
	if o.CRIEndpoint == "" {
		o.CRIEndpoint = eff.ContainerRuntimeEndpoint
	}
}

func newSetup(ctx context.Context, g *globalOptions, f *monitorFlags, cfg monitor.Config) (*setup, error) {
	if err := f.validate(); err != nil {
		return nil, usageErr(err)
	}
	node := f.cfg.Kubernetes.NodeName
	if node == "" {
		node = os.Getenv("NODE_NAME")
	}
	opts := kubeletcfg.Options{HostRoot: g.root(), Version: f.cfg.Monitor.KubeletVersion, NodeName: node, Logger: g.logger}
	if f.cfg.Monitor.KubeletCmdline != "" {
		words, err := kubeletcfg.SplitCommandLine(f.cfg.Monitor.KubeletCmdline)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--kubelet-cmdline: %w", err))
		}
		opts.Cmdline = words
	}
	eff, err := kubeletcfg.Discover(ctx, opts)
	var ie *kubeletcfg.InputError
	switch {
	case errors.As(err, &ie):
		return nil, usageErr(err)
	case err != nil:
		return nil, problem(err)
	}
	dopts := monitor.DiscoverOptions{
		HostRoot:     g.root(),
		Runtime:      f.cfg.Monitor.Runtime,
		CRIEndpoint:  f.cfg.Monitor.CRIEndpoint,
		DockerSocket: f.cfg.Monitor.DockerSocket,
		ExtraLogDirs: f.cfg.Monitor.LogDirs,
		Logger:       g.logger,
	}
	withKubelet(&dopts, eff)
	layout, err := monitor.DiscoverFilesystems(ctx, dopts)
	if err != nil {
		return nil, problem(err)
	}
	cfg.Layout = layout
	cfg.Thresholds = eff.Thresholds
	cfg.KubeletVersion = eff.Version
	cfg.HostRoot = g.root()
	cfg.PodsCgroup = eff.Cgroups.PodsCgroup()
	cfg.Logger = g.logger
	cfg.StatfsTimeout = f.cfg.Monitor.StatfsTimeout.Duration
	cfg.Eval.WarnHorizon, cfg.Eval.WarnMargin = f.cfg.Monitor.WarnHorizon.Duration, f.cfg.Monitor.WarnMargin
	m, err := monitor.New(cfg)
	if err != nil {
		return nil, problem(err)
	}
	return &setup{eff: eff, layout: layout, monitor: m, discover: dopts}, nil
}

type statusOptions struct {
	monitorFlags
	watch    bool
	interval time.Duration
	sample   time.Duration
}

func newStatusCommand(g *globalOptions) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodefs/imagefs/log usage against the kubelet's eviction thresholds",
		Long: `Show each filesystem the kubelet evicts on (nodefs, imagefs, containerfs) and the log
directories, and every eviction signal against its effective threshold: headroom, state and
predicted time to the threshold. Exit code 1 when a signal is breached.

Time to threshold needs a fill rate: use --sample (a few seconds) for a one-shot report, or
--watch, which refreshes every --interval.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), g, o)
		},
	}
	o.addFlags(cmd.Flags())
	cmd.Flags().BoolVarP(&o.watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&o.interval, "interval", 2*time.Second, "refresh interval with --watch")
	cmd.Flags().DurationVar(&o.sample, "sample", 0, "sample for this long before a one-shot report, to predict time to threshold")
	return cmd
}

func runStatus(ctx context.Context, g *globalOptions, o *statusOptions) error {
	if o.interval <= 0 || o.sample < 0 {
		return usageErr(errors.New("--interval must be positive and --sample not negative"))
	}
	s, err := newSetup(ctx, g, &o.monitorFlags, monitor.Config{
		Predict: monitor.PredictorConfig{MinSpan: min(3*time.Second, max(o.sample, time.Second))},
	})
	if err != nil {
		return err
	}
	defer s.monitor.Close()

	snap, err := s.monitor.Step(ctx)
	if err != nil {
		return problem(err)
	}
	// one-shot: sample a few times so a fill rate exists
	for end := time.Now().Add(o.sample); !o.watch && time.Now().Before(end); {
		if !sleepCtx(ctx, 250*time.Millisecond) {
			break
		}
		if snap, err = s.monitor.Step(ctx); err != nil {
			return problem(err)
		}
	}
	for {
		if err := printStatus(g, s, snap, o.watch); err != nil {
			return err
		}
		if !o.watch || !sleepCtx(ctx, o.interval) {
			break
		}
		if snap, err = s.monitor.Step(ctx); err != nil {
			break // interrupted
		}
	}
	if snap.Breached() {
		var names []string
		for _, sig := range snap.Signals {
			if sig.State == monitor.StateBreached {
				names = append(names, sig.Signal+" ("+sig.Kind+")")
			}
		}
		return problem(fmt.Errorf("eviction threshold breached: %s", strings.Join(names, ", ")))
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// statusJSON is the JSON contract of `evictguard status` (README.md#commands): filesystems and
// signals are fixed; kubelet, layout and warnings are extras.
type statusJSON struct {
	Time        time.Time                  `json:"time"`
	Kubelet     statusKubelet              `json:"kubelet"`
	Runtime     string                     `json:"runtime"`
	Dedicated   bool                       `json:"dedicatedImageFs"`
	Split       bool                       `json:"splitContainerFs"`
	Filesystems []monitor.FilesystemStatus `json:"filesystems"`
	Signals     []monitor.SignalStatus     `json:"signals"`
	Warnings    []string                   `json:"warnings"`
}

type statusKubelet struct {
	Found      bool   `json:"found"`
	Version    string `json:"version"`
	ConfigFile string `json:"configFile"`
	ConfigDir  string `json:"configDir"`
	RootDir    string `json:"rootDir"`
}

func printStatus(g *globalOptions, s *setup, snap *monitor.Snapshot, watch bool) error {
	warnings := append([]string{}, s.eff.Warnings...)
	if !s.eff.KubeletFound {
		warnings = append([]string{fmt.Sprintf("no kubelet found on this machine: using kubelet %s defaults", s.eff.Version)}, warnings...)
	}
	warnings = append(warnings, snap.Warnings...)
	if g.output == "json" {
		out := statusJSON{
			Time: snap.Time,
			Kubelet: statusKubelet{Found: s.eff.KubeletFound, Version: s.eff.Version, ConfigFile: s.eff.ConfigFile,
				ConfigDir: s.eff.ConfigDir, RootDir: s.eff.RootDir},
			Runtime: s.layout.Runtime, Dedicated: s.layout.DedicatedImageFs, Split: s.layout.SplitContainerFs,
			Filesystems: snap.Filesystems, Signals: snap.Signals, Warnings: warnings,
		}
		if out.Filesystems == nil {
			out.Filesystems = []monitor.FilesystemStatus{}
		}
		if out.Signals == nil {
			out.Signals = []monitor.SignalStatus{}
		}
		enc := json.NewEncoder(g.stdout)
		if !watch {
			enc.SetIndent("", "  ")
		}
		enc.SetEscapeHTML(false)
		return enc.Encode(out)
	}
	return writeStatusTable(g.stdout, s, snap, warnings, watch)
}

func writeStatusTable(w io.Writer, s *setup, snap *monitor.Snapshot, warnings []string, watch bool) error {
	if watch {
		fmt.Fprintf(w, "\n--- %s\n", snap.Time.Format(time.RFC3339))
	}
	kub := "kubelet " + s.eff.Version
	if !s.eff.KubeletFound {
		kub = "no kubelet found: kubelet " + s.eff.Version + " defaults"
	}
	rt := s.layout.Runtime
	if rt == "" {
		rt = "none found"
	}
	img := "imagefs on nodefs"
	if s.layout.DedicatedImageFs {
		img = "dedicated imagefs"
	}
	nodefs := "-"
	if fs := s.layout.ByRole(monitor.RoleNodeFs); fs != nil {
		nodefs = fs.Path
	}
	fmt.Fprintf(w, "%s  nodefs: %s  runtime: %s  %s\n\n", kub, nodefs, rt, img)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tPATH\tMOUNTPOINT\tDEVICE\tSIZE\tAVAIL\tINODES\tIFREE\tFILL/S\tLOGS\tNOTE")
	for _, fs := range snap.Filesystems {
		note := fs.SameAs
		if note != "" {
			note = "same fs as " + note
		}
		if fs.Error != "" {
			note = "ERROR: " + fs.Error
		}
		logs := "-"
		if fs.LogBytes != nil {
			logs = units.Bytes(*fs.LogBytes)
			if fs.LogGrowthRate != nil {
				logs += " (" + units.Bytes(int64(*fs.LogGrowthRate)) + "/s)"
			}
		} else if fs.Role == monitor.RoleLogs {
			logs = "scanning"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", fs.Role, fs.Path, dashIfEmpty(fs.Mountpoint), dashIfEmpty(fs.Device),
			units.Bytes(fs.CapacityBytes), units.Bytes(fs.AvailableBytes), fs.Inodes, fs.InodesFree, rateString(fs.BytesFillRate), logs, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SIGNAL\tKIND\tTHRESHOLD\tQUANTITY\tOBSERVED\tHEADROOM\tSTATE\tTIME-TO-THRESHOLD\tFILESYSTEM")
	if len(snap.Signals) == 0 {
		fmt.Fprintln(tw, "(none: the kubelet enforces no eviction thresholds)\t\t\t\t\t\t\t\t")
	}
	for _, sig := range snap.Signals {
		bytes := strings.HasSuffix(sig.Signal, ".available") && sig.Signal != kubeletcfg.SignalPIDAvailable
		q := func(v int64) string {
			if bytes {
				return units.Bytes(v)
			}
			return fmt.Sprint(v)
		}
		state := strings.ToUpper(string(sig.State))
		if sig.Error != "" {
			warnings = append(warnings, sig.Signal+": "+sig.Error)
		}
		tts := "-"
		if sig.SecondsToThreshold != nil {
			tts = (time.Duration(*sig.SecondsToThreshold) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sig.Signal, sig.Kind, sig.Threshold, q(sig.ThresholdQuantity), q(sig.Observed),
			q(sig.Headroom), state, tts, dashIfEmpty(sig.Filesystem))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, m := range warnings {
			fmt.Fprintln(w, "  - "+m)
		}
	}
	return nil
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rateString(r *float64) string {
	if r == nil {
		return "-"
	}
	return units.Bytes(int64(*r))
}
