package main

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/evictguard/evictguard/monitor"
)

func init() { subcommands = append(subcommands, newRunCommand) }

type runOptions struct {
	monitorFlags
	interval time.Duration
}

func newRunCommand(g *globalOptions) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: watch the eviction signals and log every state change",
		Long: `Run the daemon. Every --interval it samples nodefs, imagefs, containerfs and the log
directories, evaluates every eviction signal against the kubelet's effective thresholds and
predicts the time to each; every change of a signal's state is logged. Metrics, events and
remediation build on this loop.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd.Context(), g, o)
		},
	}
	o.addFlags(cmd.Flags())
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "monitoring interval")
	return cmd
}

func runDaemon(ctx context.Context, g *globalOptions, o *runOptions) error {
	if o.interval <= 0 {
		return usageErr(errors.New("--interval must be positive"))
	}
	s, err := newSetup(ctx, g, &o.monitorFlags, monitor.Config{LogTransitions: true})
	if err != nil {
		return err
	}
	defer s.monitor.Close()
	log := g.logger
	log.Info("kubelet thresholds", "kubeletFound", s.eff.KubeletFound, "version", s.eff.Version,
		"rootDir", s.eff.RootDir, "thresholds", len(s.monitor.Thresholds()), "sources", s.eff.Sources)
	for _, fs := range s.layout.Filesystems {
		log.Info("filesystem", "role", fs.Role, "path", fs.Path, "mountpoint", fs.Mountpoint, "device", fs.Device, "source", fs.Source, "sameAs", fs.SameAs)
	}
	for _, w := range append(append([]string{}, s.eff.Warnings...), s.layout.Warnings...) {
		log.Warn(w)
	}
	log.Info("monitoring", "interval", o.interval, "runtime", s.layout.Runtime, "dedicatedImageFs", s.layout.DedicatedImageFs)

	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		start := time.Now()
		if _, err := s.monitor.Step(ctx); err != nil && ctx.Err() == nil {
			log.Error("monitoring cycle failed", "err", err)
		}
		if d := time.Since(start); d > o.interval {
			log.Warn("monitoring cycle took longer than the interval", "duration", d, "interval", o.interval)
		}
		select {
		case <-ctx.Done():
			log.Info("stopping")
			return nil
		case <-t.C:
		}
	}
}
