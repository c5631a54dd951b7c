package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/remediate"
	"github.com/evictguard/evictguard/sdbus"
)

// remediationFlags are shared by plan and apply.
type remediationFlags struct {
	monitorFlags
	policyFile string
	// execute is where a migration's steps run (execAuto, execHere, execHost).
	execute string
	// policy, when set (the daemon's --config file), is used instead of policyFile.
	policy *policy.Policy
	// reporter, when set, receives every outcome besides the log and Node Events (the
	// daemon's remediation counters).
	reporter journal.Reporter
	// observed, when set (the daemon), is its latest snapshot, whose predictions a pass's
	// fresh sample lacks.
	observed func() *monitor.Snapshot
	// rediscover, when set (the daemon), re-discovers the monitored filesystems after a
	// migration moved, or a recovery moved back, the runtime's data root.
	rediscover func(context.Context)
}

func (f *remediationFlags) addFlags(fs *pflag.FlagSet) {
	if f.cfg == nil {
		f.cfg = config.Default()
		// plan and apply verify a change against the kubelet's /configz by default; the
		// daemon compares with it only when asked (monitor.configz.url).
		f.cfg.Monitor.Configz.URL = kubeletcfg.DefaultConfigzURL
	}
	b := binder{fs}
	f.monitorFlags.addFlags(fs)
	fs.StringVar(&f.policyFile, "policy", "", "remediation policy file (YAML, strict); default: dry run with default floors")
	b.str(&f.cfg.Actions.StateDir, "actions.stateDir", "state-dir", "node path of evictguard's journal, backups and restart log")
	b.str(&f.cfg.Actions.KubeletUnit, "actions.kubeletUnit", "unit", "the kubelet's systemd unit")
	b.str(&f.cfg.Actions.SystemdBus, "actions.systemdBus", "bus-address", "D-Bus address of the systemd manager (default: the system bus)")
	b.str(&f.cfg.Monitor.Configz.URL, "monitor.configz.url", "configz", "kubelet /configz URL used to verify a change, or \""+kubeletcfg.ConfigzViaAPIServer+"\" through the API server's node proxy (needs get nodes/proxy)")
	b.str(&f.cfg.Monitor.Configz.TokenFile, "monitor.configz.tokenFile", "configz-token-file", "file with a bearer token for --configz")
	b.str(&f.cfg.Actions.Healthz, "actions.healthz", "healthz", "kubelet /healthz URL checked after a restart")
	b.str(&f.cfg.Kubernetes.Kubeconfig, "kubernetes.kubeconfig", "kubeconfig", "kubeconfig for the API server (pod blockers, lease lock, Node Ready, Events); empty: in-cluster if available, else none")
	b.str(&f.cfg.Kubernetes.NodeName, "kubernetes.nodeName", "node-name", "this node's name (default $NODE_NAME)")
}

// loadPolicy reads --policy FILE as the config file's policy section is read (strict, with
// FILE:LINE errors); no file is the default policy (a dry run).
func loadPolicy(path string) (*policy.Policy, error) {
	var b []byte
	if path != "" {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
	}
	return config.LoadPolicy(path, b)
}

// remediation is everything plan and apply compute before acting.
type remediation struct {
	policy  *policy.Policy
	setup   *setup
	snap    *monitor.Snapshot
	tp      *remediate.ThresholdPlan
	write   *kubeletcfg.WritePlan
	journal *journal.Journal
	sd      *sdbus.Client
	kube    kube.Interface
	// blockers: why the policy forbids acting now (besides refusals in tp).
	blockers []string
	token    string
	// configzAPI, for --configz apiserver, reads /configz through the API server's node proxy.
	configzAPI *kubeletcfg.APIServerConfigz
	// mig is the data-root migration decision; migDiff the runtime config's diff when offered.
	mig     *remediate.MigrationDecision
	migDiff string
}

// kubeClient returns the API-server client for --kubeconfig (in-cluster without one), or nil
// when there is neither.
func (f *remediationFlags) kubeClient() (kube.Interface, error) {
	return kubeClient(f.cfg.Kubernetes.Kubeconfig)
}

// kubeClient is the API server client for kubeconfig (in-cluster when empty and available;
// nil without a cluster).
func kubeClient(kubeconfig string) (kube.Interface, error) {
	cfg, err := kube.Config(kubeconfig, 0, 0)
	if errors.Is(err, kube.ErrNoCluster) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	cfg.Timeout = 15 * time.Second
	return kube.NewClient(cfg)
}

func (f *remediationFlags) systemd(ctx context.Context, g *globalOptions) (*sdbus.Client, error) {
	// From a container, the node's system bus under --host-root (the DaemonSet mounts it).
	if addr := (hostexec.View{Root: g.root(), Bus: f.cfg.Actions.SystemdBus}).BusAddress(); addr != "" {
		return sdbus.NewWithAddress(ctx, g.logger, addr)
	}
	return sdbus.New(ctx, g.logger)
}

// prepare opens the journal, connects to systemd (and the API server), and returns them; the
// plan itself is computed by plan().
func (f *remediationFlags) prepare(ctx context.Context, g *globalOptions) (*remediation, error) {
	p := f.policy
	if p == nil {
		var err error
		if p, err = loadPolicy(f.policyFile); err != nil {
			return nil, usageErr(err)
		}
	}
	r := &remediation{policy: p}
	var err error
	if r.journal, err = journal.Open(g.root(), f.cfg.Actions.StateDir, g.logger); err != nil {
		return nil, problem(err)
	}
	if r.kube, err = f.kubeClient(); err != nil {
		return nil, usageErr(err)
	}
	if (p.Lock.Slots > 0 || p.Blockers.PodSelector != "" || (p.Migration.Enabled() && p.Migration.Drain)) && (r.kube == nil || f.cfg.Kubernetes.NodeName == "") {
		return nil, usageErr(errors.New("the policy's lock, pod blocker or migration.drain needs --kubeconfig and --node-name"))
	}
	if f.cfg.Monitor.Configz.URL != "" {
		var co kubeletcfg.Options
		if err := configzOptions(&co, f.cfg.Monitor.Configz.URL, f.cfg.Monitor.Configz.TokenFile, f.cfg.Kubernetes.Kubeconfig, f.cfg.Kubernetes.NodeName); err != nil {
			return nil, usageErr(err)
		}
		r.token, r.configzAPI = co.ConfigzToken, co.ConfigzAPIServer
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r.sd, err = f.systemd(sctx, g)
	if err != nil {
		g.logger.Warn("systemd unreachable", "err", err)
	}
	return r, nil
}

// plan computes the plan and the blockers.
func (f *remediationFlags) plan(ctx context.Context, g *globalOptions, r *remediation) error {
	s, err := newSetup(ctx, g, &f.monitorFlags, monitor.Config{})
	if err != nil {
		return err
	}
	defer s.monitor.Close()
	r.setup = s
	if r.snap, err = s.monitor.Step(ctx); err != nil {
		return problem(fmt.Errorf("sample filesystems: %w", err))
	}
	if f.observed != nil {
		withPredictions(r.snap, f.observed())
	}
	r.tp = remediate.PlanThresholds(r.policy, s.eff, r.snap.Signals)
	if len(r.tp.Changes) > 0 {
		r.write, err = kubeletcfg.PlanEvictionWrite(kubeletcfg.WriteRequest{Root: g.root(), Version: s.eff.Version, Hard: r.tp.New,
			Method: kubeletcfg.WriteMethod(r.policy.WriteMethod)})
		if err != nil {
			r.tp.Refusals = append(r.tp.Refusals, err.Error())
		}
	}
	f.planMigration(ctx, g, r)
	r.blockers = f.gates(ctx, r)
	return nil
}

// gates evaluates every blocker; any lookup error blocks (fail closed).
func (f *remediationFlags) gates(ctx context.Context, r *remediation) []string {
	in := remediate.GateInput{Now: time.Now()}
	var out []string
	var err error
	if in.FailedOps, err = r.journal.Failed(); err != nil {
		out = append(out, "journal unreadable: "+err.Error())
	}
	if in.Restarts, err = r.journal.Restarts(); err != nil {
		out = append(out, err.Error())
	}
	if r.sd == nil {
		out = append(out, "systemd unreachable over D-Bus")
	} else if u, err := r.sd.Unit(ctx, f.cfg.Actions.KubeletUnit); err != nil {
		out = append(out, fmt.Sprintf("cannot read %s: %v", f.cfg.Actions.KubeletUnit, err))
	} else {
		in.KubeletSince = u.InactiveExitTimestamp
	}
	if op, err := migration.Unfinished(r.journal); err == nil && op != nil {
		out = append(out, fmt.Sprintf("migration %s was interrupted after step %q: evictguard migrate --resume or --rollback", op.ID, op.Step))
	}
	out = append(out, remediate.LocalBlockers(r.policy, in)...)
	b := r.policy.Blockers
	if b.AlertmanagerURL != "" {
		why, err := remediate.AlertBlocker(ctx, nil, b.AlertmanagerURL, b.AlertMatchers)
		switch {
		case err != nil:
			out = append(out, "alert blocker unreachable (failing closed): "+err.Error())
		case why != "":
			out = append(out, why)
		}
	}
	if b.PodSelector != "" {
		why, err := remediate.PodBlocker(ctx, r.kube, f.cfg.Kubernetes.NodeName, b.PodSelector)
		switch {
		case err != nil:
			out = append(out, "pod blocker unreachable (failing closed): "+err.Error())
		case why != "":
			out = append(out, why)
		}
	}
	return out
}

func printPlan(w io.Writer, g *globalOptions, r *remediation) {
	fmt.Fprintln(w, "Thresholds:")
	for _, s := range r.tp.Reasons {
		fmt.Fprintln(w, "  "+s)
	}
	if r.write != nil {
		fmt.Fprintf(w, "Write method: %s\n", r.write.Method)
		for _, s := range r.write.Reasons {
			fmt.Fprintln(w, "  "+s)
		}
		for _, s := range r.write.Warnings {
			fmt.Fprintln(w, "  warning: "+s)
		}
		fmt.Fprintf(w, "New evictionHard (complete): %s\n", kubeletcfg.EvictionHardFlag(r.tp.New))
		for _, fw := range r.write.Files {
			fmt.Fprint(w, journal.UnifiedDiff(fw.Path, fw.Before, fw.After))
		}
	}
	printMigrationDecision(w, g, r)
	if r.mig.Act() {
		var not []string
		not = append(not, r.blockers...)
		if r.policy.Dry() {
			not = append(not, "the policy is a dry run (dryRun: true, the default)")
		}
		if len(not) > 0 {
			fmt.Fprintln(w, "Would NOT act:")
			for _, s := range not {
				fmt.Fprintln(w, "  - "+s)
			}
			return
		}
		fmt.Fprintln(w, "Would act: migrate the data root (the steps of evictguard migrate); thresholds are re-planned afterwards.")
		return
	}
	var not []string
	not = append(not, r.tp.Refusals...)
	not = append(not, r.blockers...)
	if r.policy.Dry() {
		not = append(not, "the policy is a dry run (dryRun: true, the default)")
	}
	switch {
	case len(r.tp.Changes) == 0 && len(r.tp.Refusals) == 0:
		fmt.Fprintln(w, "Nothing to do.")
	case len(not) > 0:
		fmt.Fprintln(w, "Would NOT act:")
		for _, s := range not {
			fmt.Fprintln(w, "  - "+s)
		}
	default:
		fmt.Fprintln(w, "Would act: rewrite, daemon-reload, restart the kubelet, verify (rollback on failure).")
	}
}

func newPlanCommand(g *globalOptions) *cobra.Command {
	f := &remediationFlags{}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what remediation would do now: the exact file diff and the reasons; changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := f.prepare(ctx, g)
			if err != nil {
				return err
			}
			if r.sd != nil {
				defer r.sd.Close()
			}
			if err := f.plan(ctx, g, r); err != nil {
				return err
			}
			printPlan(g.stdout, g, r)
			return nil
		},
	}
	f.addFlags(cmd.Flags())
	return cmd
}

func confirm(in io.Reader, out io.Writer) bool {
	fmt.Fprint(out, "Apply this change and restart the kubelet? Type yes: ")
	line, _ := bufio.NewReader(in).ReadString('\n')
	return strings.TrimSpace(line) == "yes"
}

func equalEnforced(a, b map[string]string) bool {
	return maps.Equal(kubeletcfg.EnforcedHard(a), kubeletcfg.EnforcedHard(b))
}

// withPredictions completes a pass's one-shot sample with the daemon's view of the same
// signals: a single sample has no fill rate, so a signal that warns because the daemon
// predicts it reaches its threshold within the warning horizon would look fine to the
// planner. The fresh observation stays; the prediction and a warning or breached state are
// taken from the daemon (never a milder state than the fresh sample's).
func withPredictions(fresh, daemon *monitor.Snapshot) {
	if fresh == nil || daemon == nil {
		return
	}
	for i := range fresh.Signals {
		s := &fresh.Signals[i]
		for _, d := range daemon.Signals {
			if d.Signal != s.Signal || d.Kind != s.Kind {
				continue
			}
			if s.FillRate == nil && s.SecondsToThreshold == nil {
				s.FillRate, s.SecondsToThreshold = d.FillRate, d.SecondsToThreshold
			}
			if s.State == monitor.StateOK && (d.State == monitor.StateWarning || d.State == monitor.StateBreached) {
				s.State = monitor.StateWarning
			}
		}
	}
}
