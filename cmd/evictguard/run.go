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

	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/monitor/feed"
)

// alertPolicy is when the direct alerts and the Node feed report an eviction as imminent.
func (o *runOptions) alertPolicy() feed.Policy {
	p := feed.Policy{WarningHorizon: o.warnHorizon, CriticalHorizon: o.criticalHorizon, For: o.alertFor}
	if o.alertFor == 0 {
		p.For = -1 // "0s" reports at once; feed.Policy's zero means its default
	}
	return p
}

type runOptions struct {
	monitorFlags
	interval time.Duration
	// exitBand and breachHold are the evaluator's hysteresis (config file only; 0: the
	// default; a negative breachHold: no hold).
	exitBand   float64
	breachHold time.Duration

	listen                    string
	historyFile               string // node path of the fill-rate history (run_history.go)
	metricsAuth               string // --metrics-auth (run_metrics.go)
	tlsCertFile, tlsKeyFile   string
	alertmanagerURLs          []string
	alertmanagerResend        time.Duration
	alertFor, criticalHorizon time.Duration
	kubeconfig                string
	configz, configzTokenFile string
	configzInterval           time.Duration
	logs                      logReclaimFlags
	remediation               daemonRemediation
	follow                    followOptions // re-discovery of the filesystems (run_follow.go)
	// alertFeeds are the running direct-alert and Node feeds, whose policy a reload replaces.
	alertFeeds []interface{ SetPolicy(feed.Policy) }

	configFile string         // --config
	control    *daemonControl // the config file, SIGHUP and sd_notify (config.go)
}

func newRunCommand(g *globalOptions) *cobra.Command { return runCommand(g, &runOptions{}) }

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
	o.addFlags(cmd.Flags())
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "monitoring interval")
	fl := cmd.Flags()
	addConfigFlag(fl, o)
	fl.StringVar(&o.historyFile, "history-file", "", "node path of a file that keeps the fill-rate history across restarts and upgrades (empty: not kept)")
	fl.StringVar(&o.metricsAuth, "metrics-auth", "none", "protect --listen: none, or kubernetes (HTTPS; a bearer token the API server authenticates, allowed to get the path; /healthz and /readyz stay open)")
	fl.StringVar(&o.tlsCertFile, "tls-cert-file", "", "certificate for --listen over HTTPS (with --metrics-auth kubernetes and none given: self-signed at start)")
	fl.StringVar(&o.tlsKeyFile, "tls-private-key-file", "", "private key of --tls-cert-file")
	fl.StringVar(&o.listen, "listen", "127.0.0.1:9847", "address for /metrics, /healthz and /readyz (empty: no HTTP server)")
	fl.StringArrayVar(&o.alertmanagerURLs, "alertmanager.url", nil, "Alertmanager base URL to post alerts to directly (repeatable; for clusters without Prometheus)")
	fl.DurationVar(&o.alertmanagerResend, "alertmanager.resend", 30*time.Second, "re-post active alerts this often")
	fl.DurationVar(&o.alertFor, "alert-for", time.Minute, "a predicted eviction must hold this long before the direct alerts, Events and condition report it (0: at once)")
	fl.DurationVar(&o.criticalHorizon, "critical-horizon", 10*time.Minute, "EvictionImminent is critical when the threshold is predicted within this time (warning within --warn-horizon)")
	fl.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for Node Events and the EvictionPredicted condition (default: in-cluster when available, else metrics only)")
	fl.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fl.StringVar(&o.configz, "configz", "", "kubelet /configz URL or file to compare the computed thresholds with (e.g. "+kubeletcfg.DefaultConfigzURL+"), or \""+
		kubeletcfg.ConfigzViaAPIServer+"\" through the API server's node proxy (needs get nodes/proxy); empty: not checked")
	fl.StringVar(&o.configzTokenFile, "configz-token-file", "", "file with a bearer token for --configz")
	fl.DurationVar(&o.configzInterval, "configz-interval", 5*time.Minute, "how often --configz is compared again")
	o.logs.addFlags(fl)
	o.remediation.addFlags(fl)
	o.follow.addFlags(fl)
	return cmd
}

func runDaemon(ctx context.Context, g *globalOptions, o *runOptions) error {
	if o.interval <= 0 {
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
	log.Info("monitoring", "interval", o.interval, "runtime", s.layout.Runtime, "dedicatedImageFs", s.layout.DedicatedImageFs)

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

	hist := newHistoryKeeper(g.root(), o.historyFile, s.monitor, log)
	hist.restore(time.Now())
	t := time.NewTicker(o.interval)
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
		if d := time.Since(start); d > o.interval {
			log.Warn("monitoring cycle took longer than the interval", "duration", d, "interval", o.interval)
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
	return monitor.EvalConfig{WarnHorizon: o.warnHorizon, WarnMargin: o.warnMargin, ExitBand: o.exitBand, BreachHold: o.breachHold}
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
	if o.configz != "" {
		if err := mism.refresh(ctx, g, o); err != nil {
			log.Warn("comparing with /configz failed", "configz", o.configz, "err", err)
		}
		out.goRun(func() {
			t := time.NewTicker(o.configzInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := mism.refresh(ctx, g, o); err != nil && ctx.Err() == nil {
						log.Warn("comparing with /configz failed", "configz", o.configz, "err", err)
					}
				}
			}
		})
	}
	policy := o.alertPolicy()
	node := o.nodeName
	if node == "" {
		node, _ = os.Hostname()
	}
	// One client to the API server serves the metrics endpoint's reviews and the Node reporter.
	kube.RouteKlog(log)
	cfg, cfgErr := kube.Config(o.kubeconfig, 5, 10)
	var client *kube.Client
	if cfgErr == nil {
		cfg.Timeout = 15 * time.Second
		var err error
		if client, err = kube.NewClient(cfg); err != nil {
			return nil, problem(err)
		}
	}

	if o.listen != "" {
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
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--listen: %w", err))
		}
		h, ln, err := o.secureMetrics(monitor.NewHandler(reg, s.monitor, monitor.HandlerOptions{MaxAge: max(5*o.interval, 30*time.Second)}), ln, node, client, cfgErr, log)
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving metrics", "address", ln.Addr().String(), "auth", o.metricsAuth)
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

	if len(o.alertmanagerURLs) > 0 {
		am, err := feed.NewAlertmanager(feed.AlertmanagerConfig{
			URLs: o.alertmanagerURLs, Node: node, GeneratorURL: "http://" + o.listen + "/metrics",
			Policy: policy, Resend: o.alertmanagerResend, Mismatches: mism.get, Logger: log,
		})
		if err != nil {
			return nil, usageErr(fmt.Errorf("--alertmanager.url: %w", err))
		}
		log.Info("posting alerts to Alertmanager", "urls", o.alertmanagerURLs, "node", node)
		out.notifiers = append(out.notifiers, am.Notify)
		o.alertFeeds = append(o.alertFeeds, am)
		out.goRun(func() { am.Run(ctx) })
	}

	switch {
	case errors.Is(cfgErr, kube.ErrNoCluster):
		log.Info("no API server configured: metrics only (no Node Events or condition)")
	case cfgErr != nil:
		return nil, usageErr(cfgErr)
	case o.nodeName == "":
		return nil, usageErr(errors.New("--node-name (or NODE_NAME) is needed for Node Events and the condition"))
	default:
		o.logs.client = client
		nr, err := feed.NewNodeReporter(feed.NodeConfig{Client: client, Node: o.nodeName, Policy: policy, Mismatches: mism.get, Logger: log})
		if err != nil {
			return nil, problem(err)
		}
		log.Info("reporting to the API server", "server", cfg.Host, "node", o.nodeName)
		out.notifiers = append(out.notifiers, nr.Notify)
		o.alertFeeds = append(o.alertFeeds, nr)
		out.goRun(func() { nr.Run(ctx) })
	}
	if err := o.logs.start(ctx, g, s, o.dockerSocket, node, out); err != nil {
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
	opts := kubeletcfg.Options{HostRoot: g.root(), Version: o.kubeletVersion, ConfigzURL: o.configz, NodeName: o.nodeName, Logger: g.logger}
	if o.kubeletCmdline != "" {
		words, err := kubeletcfg.SplitCommandLine(o.kubeletCmdline)
		if err != nil {
			return err
		}
		opts.Cmdline = words
	}
	if err := configzOptions(&opts, o.configz, o.configzTokenFile, o.kubeconfig, o.nodeName); err != nil {
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
