package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/reclaim"
)

// logReclaimFlags are `run`'s log-budget and reclaim-ladder settings (issue 8). Everything is
// off unless asked for.
type logReclaimFlags struct {
	cfg *config.Configuration // runOptions.cfg

	// Set by startOutputs when available.
	reg    prometheus.Registerer
	client kube.Interface
	// live carries a configuration reload to the worker (reload.go).
	live *logsLive
	// escalator receives the ladder's escalations: the daemon's remediation pass, set by
	// daemonRemediation.start before the first snapshot (nil: no remediation policy).
	escalator reclaim.Escalator
}

func (f *logReclaimFlags) addFlags(fl *pflag.FlagSet) {
	b := binder{fl}
	b.str(&f.cfg.Logs.Budget.File, "logs.budget.file", "log-budget-file", "write the log budget here (env file; fluent-bit and fluentd snippets next to it), e.g. "+reclaim.DefaultLogBudgetFile+" (node path; empty: metric and annotation only)")
	b.str(&f.cfg.Logs.Budget.Margin, "logs.budget.margin", "log-budget-margin", "safety margin kept free above the nearest threshold: a quantity (\"512Mi\") or a percentage of capacity")
	b.str(&f.cfg.Actions.Reclaim.Ballast.Size, "actions.reclaim.ballast.size", "ballast-size", "keep a preallocated ballast of this size on nodefs, released first when eviction nears (e.g. 1Gi; empty: none)")
	b.str(&f.cfg.Actions.Reclaim.Ballast.Path, "actions.reclaim.ballast.path", "ballast-path", "the ballast file (node path, on nodefs)")
	b.list(&f.cfg.Actions.Reclaim.Allow, "actions.reclaim.allow", "reclaim", "reclaim steps allowed before eviction: ballast, gc, logs, escalate (comma-separated; empty: off)")
	b.boolean(&f.cfg.Actions.Reclaim.DryRun, "actions.reclaim.dryRun", "reclaim-dry-run", "report what the reclaim steps would do and change nothing")
	b.dur(&f.cfg.Actions.Reclaim.Horizon.Duration, "actions.reclaim.horizon", "reclaim-horizon", "climb the reclaim ladder while eviction is predicted sooner than this")
	b.str(&f.cfg.Actions.Reclaim.LowHeadroom, "actions.reclaim.lowHeadroom", "reclaim-low-headroom", "also climb while nodefs headroom is below this quantity (e.g. 1Gi)")
	b.integer(&f.cfg.Actions.Reclaim.GC.KeepExited, "actions.reclaim.gc.keepExited", "gc-keep-exited", "runtime GC keeps this many of the newest exited containers")
	b.strs(&f.cfg.Actions.Reclaim.GC.KeepImages, "actions.reclaim.gc.keepImages", "gc-keep-image", "image reference runtime GC never removes, e.g. the pause image (repeatable)")
	b.dur(&f.cfg.Actions.Reclaim.RotatedLogs.MinAge.Duration, "actions.reclaim.rotatedLogs.minAge", "rotated-log-age", "compress rotated container logs older than this")
	b.strs(&f.cfg.Actions.Reclaim.RotatedLogs.PosFiles, "actions.reclaim.rotatedLogs.posFiles", "log-pos-file", "fluentd pos_file: only rotated logs it shows fully read are compressed (repeatable; node path)")
}

// runtimeGC is runtime GC through the runtime's own API: dockerd's Engine API, or the CRI
// socket discovery found (containerd, CRI-O); nil when there is neither. Through CRI,
// --gc-keep-exited counts exited attempts per pod container (at least 1, the one the
// kubelet keeps for logs and restart counts).
func (f *logReclaimFlags) runtimeGC(g *globalOptions, layout *monitor.Layout, dockerSocket string) reclaim.RuntimeGC {
	switch {
	case layout.Runtime == monitor.RuntimeDocker:
		sock := dockerSocket
		if sock == "" {
			sock = g.root().Path("/var/run/docker.sock")
		}
		return &reclaim.DockerGC{Socket: sock, KeepExited: f.cfg.Actions.Reclaim.GC.KeepExited, KeepImages: f.cfg.Actions.Reclaim.GC.KeepImages}
	case layout.CRISocket != "":
		return &reclaim.CRIGC{Socket: layout.CRISocket, KeepPerContainer: f.cfg.Actions.Reclaim.GC.KeepExited, KeepImages: f.cfg.Actions.Reclaim.GC.KeepImages}
	}
	return nil
}

// start wires the budget publisher and the reclaim ladder to the monitor's snapshots. The
// ladder runs in its own goroutine on the latest snapshot, so a slow GC never delays
// monitoring.
func (f *logReclaimFlags) start(ctx context.Context, g *globalOptions, s *setup, dockerSocket, node string, out *outputs) error {
	log := g.logger.With("component", "logs")
	// The same parse as a reload's (newLogsUpdate), so a value start accepts a reload accepts.
	u, err := newLogsUpdate(f)
	if err != nil {
		return usageErr(err)
	}
	budgetCfg := reclaim.BudgetConfig{MarginPercent: u.marginPercent, MarginBytes: u.marginBytes}
	for _, fs := range s.layout.Filesystems {
		if fs.Role == monitor.RoleLogs && fs.Source == "configured" {
			budgetCfg.BufferDirs = append(budgetCfg.BufferDirs, fs.Path)
		}
	}
	pcfg := reclaim.BudgetPublisherConfig{Registerer: f.reg, Log: log, Kube: f.client, NodeName: node}
	if f.cfg.Logs.Budget.File != "" {
		pcfg.File = g.root().Path(f.cfg.Logs.Budget.File)
	}
	if f.client == nil {
		pcfg.NodeName = ""
	}
	pub, err := reclaim.NewBudgetPublisher(pcfg)
	if err != nil {
		return problem(err)
	}

	allow, low := u.allow, u.lowHeadroom
	size, err := config.ParseQuantity(f.cfg.Actions.Reclaim.Ballast.Size)
	if err != nil {
		return usageErr(fmt.Errorf("--ballast-size: %w", err))
	}
	var ladder *reclaim.Ladder
	if len(allow) > 0 || size > 0 {
		ladder = &reclaim.Ladder{
			Policy: reclaim.Policy{Allow: allow, DryRun: f.cfg.Actions.Reclaim.DryRun, Horizon: f.cfg.Actions.Reclaim.Horizon.Duration, LowHeadroom: low},
			Log:    log,
		}
		if f.client != nil {
			ladder.Reporter = reclaim.EventReporter{Client: f.client, Node: node, Log: log}
		}
		if nfs := s.layout.ByRole(monitor.RoleNodeFs); nfs != nil {
			ladder.FsPath = nfs.HostPath
		}
		if size > 0 {
			ladder.Ballast = &reclaim.Ballast{Path: g.root().Path(f.cfg.Actions.Reclaim.Ballast.Path), Size: size}
		}
		ladder.GC = f.runtimeGC(g, s.layout, dockerSocket)
		if ladder.GC == nil && slices.Contains(allow, reclaim.StepGC) {
			log.Warn("no runtime API found for runtime GC (docker socket or CRI socket); the step is skipped", "runtime", s.layout.Runtime)
		}
		// Container logs only: the kubelet's pod logs and the runtime's, never /var/log at large.
		var dirs []string
		for _, fs := range s.layout.Filesystems {
			switch fs.Source {
			case "kubelet podLogsDir", "docker container logs", "/var/log/containers link targets":
				if fs.Role == monitor.RoleLogs {
					dirs = append(dirs, fs.HostPath)
				}
			}
		}
		var pos []string
		for _, p := range f.cfg.Actions.Reclaim.RotatedLogs.PosFiles {
			pos = append(pos, g.root().Path(p))
		}
		ladder.Logs = &reclaim.RotatedLogs{Dirs: dirs, MinAge: f.cfg.Actions.Reclaim.RotatedLogs.MinAge.Duration, PosFiles: pos}
		if f.reg != nil {
			if err := ladder.RegisterMetrics(f.reg); err != nil {
				return problem(err)
			}
		}
		gcAPI := "none"
		switch gc := ladder.GC.(type) {
		case *reclaim.DockerGC:
			gcAPI = "docker " + gc.Socket
		case *reclaim.CRIGC:
			gcAPI = "cri " + gc.Socket
		}
		log.Info("reclaim ladder", "allow", allow, "dryRun", f.cfg.Actions.Reclaim.DryRun, "horizon", f.cfg.Actions.Reclaim.Horizon.Duration, "ballast", size, "logDirs", dirs, "runtimeGC", gcAPI)
	}

	snaps := make(chan *monitor.Snapshot, 1)
	out.notifiers = append(out.notifiers, func(s *monitor.Snapshot) {
		select {
		case snaps <- s:
		default: // the worker is busy; it takes the next one
		}
	})
	out.goRun(func() {
		lastErr := ""
		for {
			select {
			case <-ctx.Done():
				return
			case snap := <-snaps:
				f.live.apply(g.root(), &budgetCfg, pub, ladder, log)
				if _, err := pub.Update(ctx, reclaim.ComputeLogBudgets(snap, budgetCfg)); err != nil {
					log.Warn("log budget", "err", err)
				}
				if ladder == nil {
					continue
				}
				if f.escalator != nil {
					ladder.Escalator = f.escalator
				}
				// Log a persistent problem (e.g. no nodefs.available threshold) once, not every cycle.
				_, err := ladder.Step(ctx, snap)
				if msg := fmt.Sprint(err); err != nil && msg != lastErr {
					log.Warn("reclaim ladder", "err", err)
					lastErr = msg
				} else if err == nil && lastErr != "" {
					log.Info("reclaim ladder: recovered")
					lastErr = ""
				}
			}
		}
	})
	return nil
}
