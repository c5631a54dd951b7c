package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/monitor/feed"
)

// alertPolicy is when the direct alerts and the Node feed report an eviction as imminent.
func (o *runOptions) alertPolicy() feed.Policy {
	p := feed.Policy{WarningHorizon: o.cfg.Monitor.WarnHorizon.Duration, CriticalHorizon: o.cfg.Alerts.CriticalHorizon.Duration, For: o.cfg.Alerts.For.Duration}
	if o.cfg.Alerts.For.Duration == 0 {
		p.For = -1 // "0s" reports at once; feed.Policy's zero means its default
	}
	return p
}

// runOptions are `run`'s settings: its configuration (monitorFlags.cfg, the flags bound to
// it) and the running parts a reload reaches.
type runOptions struct {
	monitorFlags
	logs        logReclaimFlags
	remediation daemonRemediation
	follow      followOptions // re-discovery of the filesystems (run_follow.go)
	// alertFeeds are the running direct-alert and Node feeds, whose policy a reload replaces.
	alertFeeds []interface{ SetPolicy(feed.Policy) }

	configFile string         // --config
	control    *daemonControl // the config file, SIGHUP and sd_notify (config.go)
}

func newRunCommand(g *globalOptions) *cobra.Command { return runCommand(g, &runOptions{}) }

// setConfig makes c the configuration the daemon runs with (the flags' values included).
func (o *runOptions) setConfig(c *config.Configuration) {
	o.cfg, o.logs.cfg, o.follow.cfg, o.remediation.cfg = c, c, c, c
}

// runCommand is `run` with its flags bound to o.
func runCommand(g *globalOptions, o *runOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: watch the eviction signals and log every state change",
		Long: `Run the daemon. Every --interval it samples nodefs, imagefs, containerfs and the log
directories, evaluates every eviction signal against the kubelet's effective thresholds and
predicts the time to each; every change of a signal's state is logged. Metrics, events and
remediation build on this loop.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, err := newDaemonControl(o, cmd.Flags(), g.logger)
			if err != nil {
				return err
			}
			defer dc.Close()
			o.control = dc
			return runDaemon(cmd.Context(), g, o)
		},
	}
	if o.cfg == nil {
		o.setConfig(config.Default())
	}
	fl := cmd.Flags()
	b := binder{fl}
	o.addFlags(fl)
	b.dur(&o.cfg.Monitor.Interval.Duration, "monitor.interval", "interval", "monitoring interval")
	addConfigFlag(fl, o)
	b.str(&o.cfg.Monitor.HistoryFile, "monitor.historyFile", "history-file", "node path of a file that keeps the fill-rate history across restarts and upgrades (empty: not kept)")
	b.str(&o.cfg.Metrics.Auth, "metrics.auth", "metrics-auth", "protect --listen: none, or kubernetes (HTTPS; a bearer token the API server authenticates, allowed to get the path; /healthz and /readyz stay open)")
	b.str(&o.cfg.Metrics.TLS.CertFile, "metrics.tls.certFile", "tls-cert-file", "certificate for --listen over HTTPS (with --metrics-auth kubernetes and none given: self-signed at start)")
	b.str(&o.cfg.Metrics.TLS.KeyFile, "metrics.tls.keyFile", "tls-private-key-file", "private key of --tls-cert-file")
	b.str(&o.cfg.Metrics.Listen, "metrics.listen", "listen", "address for /metrics, /healthz and /readyz (empty: no HTTP server)")
	b.strs(&o.cfg.Alerts.AlertmanagerURLs, "alerts.alertmanagerURLs", "alertmanager.url", "Alertmanager base URL to post alerts to directly (repeatable; for clusters without Prometheus)")
	b.dur(&o.cfg.Alerts.Resend.Duration, "alerts.resend", "alertmanager.resend", "re-post active alerts this often")
	b.dur(&o.cfg.Alerts.For.Duration, "alerts.for", "alert-for", "a predicted eviction must hold this long before the direct alerts, Events and condition report it (0: at once)")
	b.dur(&o.cfg.Alerts.CriticalHorizon.Duration, "alerts.criticalHorizon", "critical-horizon", "EvictionImminent is critical when the threshold is predicted within this time (warning within --warn-horizon)")
	b.str(&o.cfg.Kubernetes.Kubeconfig, "kubernetes.kubeconfig", "kubeconfig", "kubeconfig for Node Events and the EvictionPredicted condition (default: in-cluster when available, else metrics only)")
	b.str(&o.cfg.Kubernetes.NodeName, "kubernetes.nodeName", "node-name", "this node's name (default $NODE_NAME)")
	b.str(&o.cfg.Monitor.Configz.URL, "monitor.configz.url", "configz", "kubelet /configz URL or file to compare the computed thresholds with (e.g. "+kubeletcfg.DefaultConfigzURL+"), or \""+
		kubeletcfg.ConfigzViaAPIServer+"\" through the API server's node proxy (needs get nodes/proxy); empty: not checked")
	b.str(&o.cfg.Monitor.Configz.TokenFile, "monitor.configz.tokenFile", "configz-token-file", "file with a bearer token for --configz")
	b.dur(&o.cfg.Monitor.Configz.Interval.Duration, "monitor.configz.interval", "configz-interval", "how often --configz is compared again")
	o.logs.addFlags(fl)
	o.remediation.addFlags(fl)
	o.follow.addFlags(fl)
	return cmd
}

func runDaemon(ctx context.Context, g *globalOptions, o *runOptions) error {
	if o.cfg.Monitor.Interval.Duration <= 0 {
		return usageErr(errors.New("--interval must be positive"))
	}
	s, err := newSetup(ctx, g, &o.monitorFlags, monitor.Config{LogTransitions: true, Eval: o.evalConfig()})
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
	log.Info("monitoring", "interval", o.cfg.Monitor.Interval.Duration, "runtime", s.layout.Runtime, "dedicatedImageFs", s.layout.DedicatedImageFs)

	if err := o.remediation.load(); err != nil {
		return err
	}
	follow, err := newLayoutFollower(g, o, s)
	if err != nil {
		return err
	}
	o.remediation.rediscover = follow.afterOwnMigration(s)
	outputs, err := startOutputs(ctx, g, o, s)
	if err != nil {
		return err
	}
	defer outputs.wait()
	o.remediation.start(ctx, g, o, outputs)
	outputs.goRun(func() { follow.run(ctx) })

	hist := newHistoryKeeper(g.root(), o.cfg.Monitor.HistoryFile, s.monitor, log)
	hist.restore(time.Now())
	t := time.NewTicker(o.cfg.Monitor.Interval.Duration)
	defer t.Stop()
	for {
		start := time.Now()
		snap, err := s.monitor.Step(ctx)
		if err != nil && ctx.Err() == nil {
			log.Error("monitoring cycle failed", "err", err)
		} else if snap != nil {
			outputs.notify(snap)
			hist.save(time.Now(), false)
		}
		o.control.Stepped(snap != nil)
		if d := time.Since(start); d > o.cfg.Monitor.Interval.Duration {
			log.Warn("monitoring cycle took longer than the interval", "duration", d, "interval", o.cfg.Monitor.Interval.Duration)
		}
		select {
		case <-ctx.Done():
			log.Info("stopping")
			hist.save(time.Now(), true)
			return nil
		case <-t.C:
		case <-o.control.Reload():
			o.control.reload(t, s.monitor)
		}
	}
}

// evalConfig is the evaluator's configuration from the options.
func (o *runOptions) evalConfig() monitor.EvalConfig {
	m := o.cfg.Monitor
	hold := m.Hysteresis.BreachHold.Duration
	if hold == 0 {
		hold = -1 // "0s" in the file: no hold, which EvalConfig spells as negative
	}
	return monitor.EvalConfig{WarnHorizon: m.WarnHorizon.Duration, WarnMargin: m.WarnMargin, ExitBand: m.Hysteresis.ExitBand, BreachHold: hold}
}

// outputs are where evaluations go besides the log: the HTTP endpoints (read at scrape
// time), the direct Alertmanager feed and the Node reporter (handed each snapshot without
// blocking).
type outputs struct {
	notifiers []func(*monitor.Snapshot)
	wg        sync.WaitGroup
}

func (out *outputs) notify(s *monitor.Snapshot) {
	for _, n := range out.notifiers {
		n(s)
	}
}

func (out *outputs) wait() { out.wg.Wait() }

func (out *outputs) goRun(f func()) {
	out.wg.Add(1)
	go func() { defer out.wg.Done(); f() }()
}

func startOutputs(ctx context.Context, g *globalOptions, o *runOptions, s *setup) (*outputs, error) {
	log := g.logger
	out := &outputs{}
	mism := &configzState{}
	if o.cfg.Monitor.Configz.URL != "" {
		if err := mism.refresh(ctx, g, o); err != nil {
			log.Warn("comparing with /configz failed", "configz", o.cfg.Monitor.Configz.URL, "err", err)
		}
		out.goRun(func() {
			t := time.NewTicker(o.cfg.Monitor.Configz.Interval.Duration)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := mism.refresh(ctx, g, o); err != nil && ctx.Err() == nil {
						log.Warn("comparing with /configz failed", "configz", o.cfg.Monitor.Configz.URL, "err", err)
					}
				}
			}
		})
	}
	policy := o.alertPolicy()
	node := o.cfg.Kubernetes.NodeName
	if node == "" {
		node, _ = os.Hostname()
	}
	// One client to the API server serves the metrics endpoint's reviews and the Node reporter.
	kube.RouteKlog(log)
	cfg, cfgErr := kube.Config(o.cfg.Kubernetes.Kubeconfig, 5, 10)
	var client *kube.Client
	if cfgErr == nil {
		cfg.Timeout = 15 * time.Second
		var err error
		if client, err = kube.NewClient(cfg); err != nil {
			return nil, problem(err)
		}
	}

	if o.cfg.Metrics.Listen != "" {
		v := buildVersion()
		c := monitor.NewCollector(s.monitor, monitor.CollectorOptions{
			Build:             monitor.BuildInfo{Version: v.Version, Revision: v.Revision, GoVersion: runtime.Version()},
			ConfigzChecked:    mism.checked,
			ConfigzMismatches: mism.get,
		})
		reg, err := monitor.NewRegistry(c)
		if err != nil {
			return nil, problem(err)
		}
		rm, err := monitor.NewRemediationMetrics(reg, remediationActions, remediationResults)
		if err != nil {
			return nil, problem(err)
		}
		o.remediation.reporter = metricsReporter{rm}
		o.logs.reg = reg
		ln, err := net.Listen("tcp", o.cfg.Metrics.Listen)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--listen: %w", err))
		}
		h, ln, err := o.secureMetrics(monitor.NewHandler(reg, s.monitor, monitor.HandlerOptions{MaxAge: max(5*o.cfg.Monitor.Interval.Duration, 30*time.Second)}), ln, node, client, cfgErr, log)
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving metrics", "address", ln.Addr().String(), "auth", o.cfg.Metrics.Auth)
		out.goRun(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server failed", "err", err)
			}
		})
		out.goRun(func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
	}

	if len(o.cfg.Alerts.AlertmanagerURLs) > 0 {
		am, err := feed.NewAlertmanager(feed.AlertmanagerConfig{
			URLs: o.cfg.Alerts.AlertmanagerURLs, Node: node, GeneratorURL: "http://" + o.cfg.Metrics.Listen + "/metrics",
			Policy: policy, Resend: o.cfg.Alerts.Resend.Duration, Mismatches: mism.get, Logger: log,
		})
		if err != nil {
			return nil, usageErr(fmt.Errorf("--alertmanager.url: %w", err))
		}
		log.Info("posting alerts to Alertmanager", "urls", o.cfg.Alerts.AlertmanagerURLs, "node", node)
		out.notifiers = append(out.notifiers, am.Notify)
		o.alertFeeds = append(o.alertFeeds, am)
		out.goRun(func() { am.Run(ctx) })
	}

	switch {
	case errors.Is(cfgErr, kube.ErrNoCluster):
		log.Info("no API server configured: metrics only (no Node Events or condition)")
	case cfgErr != nil:
		return nil, usageErr(cfgErr)
	case o.cfg.Kubernetes.NodeName == "":
		return nil, usageErr(errors.New("--node-name (or NODE_NAME) is needed for Node Events and the condition"))
	default:
		o.logs.client = client
		nr, err := feed.NewNodeReporter(feed.NodeConfig{Client: client, Node: o.cfg.Kubernetes.NodeName, Policy: policy, Mismatches: mism.get, Logger: log})
		if err != nil {
			return nil, problem(err)
		}
		log.Info("reporting to the API server", "server", cfg.Host, "node", o.cfg.Kubernetes.NodeName)
		out.notifiers = append(out.notifiers, nr.Notify)
		o.alertFeeds = append(o.alertFeeds, nr)
		out.goRun(func() { nr.Run(ctx) })
	}
	if err := o.logs.start(ctx, g, s, o.cfg.Monitor.DockerSocket, node, out); err != nil {
		return nil, err
	}
	return out, nil
}

// configzState holds the latest comparison of the computed thresholds with /configz.
type configzState struct {
	mu         sync.Mutex
	done       bool
	mismatches []string
}

func (c *configzState) checked() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.done }

func (c *configzState) get() []string { c.mu.Lock(); defer c.mu.Unlock(); return c.mismatches }

func (c *configzState) refresh(ctx context.Context, g *globalOptions, o *runOptions) error {
	opts := kubeletcfg.Options{HostRoot: g.root(), Version: o.cfg.Monitor.KubeletVersion, ConfigzURL: o.cfg.Monitor.Configz.URL, NodeName: o.cfg.Kubernetes.NodeName, Logger: g.logger}
	if o.cfg.Monitor.KubeletCmdline != "" {
		words, err := kubeletcfg.SplitCommandLine(o.cfg.Monitor.KubeletCmdline)
		if err != nil {
			return err
		}
		opts.Cmdline = words
	}
	if err := configzOptions(&opts, o.cfg.Monitor.Configz.URL, o.cfg.Monitor.Configz.TokenFile, o.cfg.Kubernetes.Kubeconfig, o.cfg.Kubernetes.NodeName); err != nil {
		return err
	}
	eff, err := kubeletcfg.Discover(ctx, opts)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.done, c.mismatches = true, eff.Mismatches
	c.mu.Unlock()
	return nil
}
