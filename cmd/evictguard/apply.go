package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/lease"
	"github.com/evictguard/evictguard/remediate"
	"github.com/evictguard/evictguard/sdbus"
)

type applyOptions struct {
	remediationFlags
	yes   bool
	clear string
}

func newApplyCommand(g *globalOptions) *cobra.Command {
	o := &applyOptions{}
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Carry out the remediation plan under the policy: rewrite, restart the kubelet over D-Bus, verify, roll back on failure",
		Long: `Carry out what 'evictguard plan' shows, if the policy allows it now. First, operations a
crash interrupted are finished or rolled back from the journal. Then the complete new
evictionHard map is written (journaled, backed up, atomically), systemd reloads, the kubelet is
restarted over D-Bus, and evictguard waits for /healthz, no restart loop, the new thresholds on
the kubelet's command line and /configz, and Node Ready (with --kubeconfig). Any failure within
the policy's verifyTimeout restores the old files and verifies the old state; if even that fails
the operation is marked failed and evictguard refuses to act until 'evictguard apply --clear OP'.
Exit code 1 when blocked, refused, rolled back or failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd.Context(), g, o)
		},
	}
	o.addFlags(cmd.Flags())
	cmd.Flags().BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&o.execute, "execute", execAuto, "where a data-root migration's steps run: here, host (a transient systemd unit on the node, followed from here) or auto (host when --host-root is not /)")
	cmd.Flags().StringVar(&o.clear, "clear", "", "mark a failed operation as handled by an operator (after checking the node) and exit")
	return cmd
}

func runApply(ctx context.Context, g *globalOptions, o *applyOptions) error {
	if o.clear != "" {
		j, err := journal.Open(g.root(), o.cfg.Actions.StateDir, g.logger)
		if err != nil {
			return problem(err)
		}
		if err := j.Clear(o.clear, "cleared by evictguard apply --clear"); err != nil {
			return usageErr(err)
		}
		fmt.Fprintf(g.stdout, "Operation %s cleared.\n", o.clear)
		return nil
	}
	r, err := o.prepare(ctx, g)
	if err != nil {
		return err
	}
	if r.sd == nil {
		return problem(errors.New("systemd unreachable over D-Bus: cannot restart the kubelet"))
	}
	defer r.sd.Close()

	exec := o.executor(g, r, "")
	// Recovery first: an interrupted operation is finished or rolled back before anything new
	// (a threshold rewrite by the executor, a migration as `evictguard migrate --resume`).
	if unfinished, err := r.journal.Unfinished(); err != nil {
		return problem(err)
	} else if len(unfinished) > 0 {
		version := o.cfg.Monitor.KubeletVersion
		exec.Verify = o.verifier(g, r, version)
		if err := errors.Join(exec.Recover(ctx), o.recoverMigration(ctx, g, r, exec.Reporter)); err != nil {
			return problem(fmt.Errorf("recovery: %w", err))
		}
		fmt.Fprintf(g.stdout, "Recovered %d interrupted operation(s).\n", len(unfinished))
	}

	if err := o.plan(ctx, g, r); err != nil {
		return err
	}
	printPlan(g.stdout, g, r)
	exec.Verify = o.verifier(g, r, r.setup.eff.Version)
	// A migration the policy allows and the preflight accepts goes first: it gives nodefs real
	// headroom, where a threshold rewrite only moves the line. The next pass re-plans.
	if r.mig.Act() {
		return applyMigration(ctx, g, o, r, exec.Reporter)
	}
	switch {
	case len(r.tp.Changes) == 0 && len(r.tp.Refusals) == 0:
		return nil
	case len(r.tp.Refusals) > 0 || len(r.blockers) > 0:
		reason := strings.Join(append(append([]string{}, r.tp.Refusals...), r.blockers...), "; ")
		journal.MultiReporter{journal.LogReporter{Log: g.logger}, exec.Reporter}.Report(ctx, journal.Report{Action: journal.KindThresholdRewrite, Result: journal.ResultBlocked, Reason: reason, Old: r.tp.Old, New: r.tp.New})
		return problem(errors.New("not applied: " + reason))
	case r.policy.Dry():
		fmt.Fprintln(g.stdout, "Dry run: nothing written (set dryRun: false in the policy).")
		return nil
	}
	if !o.yes && !confirm(os.Stdin, g.stdout) {
		return problem(errors.New("not confirmed"))
	}
	write := r.write
	if inj := hooks.injectThreshold(); inj != "" {
		k, v, ok := strings.Cut(inj, "<")
		if !ok {
			return usageErr(fmt.Errorf("test hook threshold %q must be signal<value", inj))
		}
		hard := map[string]string{}
		for kk, vv := range r.tp.New {
			hard[kk] = vv
		}
		hard[k] = v
		g.logger.Warn("TEST HOOK: writing a threshold the kubelet rejects", "signal", k, "value", v)
		write, err = kubeletcfg.PlanEvictionWrite(kubeletcfg.WriteRequest{Root: g.root(), Version: r.setup.eff.Version, Hard: hard,
			Method: write.Method, SkipValidation: true})
		if err != nil {
			return problem(err)
		}
	}

	var lock *lease.Lock
	slot := ""
	if r.policy.Lock.Slots > 0 {
		lock = &lease.Lock{Client: r.kube, Namespace: r.policy.Lock.Namespace, Name: r.policy.Lock.Name,
			Slots: r.policy.Lock.Slots, TTL: r.policy.Lock.TTL.Duration, Identity: o.cfg.Kubernetes.NodeName}
		var why string
		slot, why, err = lock.Acquire(ctx)
		switch {
		case err != nil:
			return problem(fmt.Errorf("not applied: restart lock unavailable (failing closed): %w", err))
		case slot == "":
			journal.MultiReporter{journal.LogReporter{Log: g.logger}, exec.Reporter}.Report(ctx, journal.Report{Action: journal.KindThresholdRewrite, Result: journal.ResultBlocked, Reason: why})
			fmt.Fprintln(g.stdout, "Would NOT act:\n  - "+why)
			return problem(errors.New("not applied: " + why))
		}
		g.logger.Info("restart lock acquired", "lease", r.policy.Lock.Namespace+"/"+slot)
		defer func() {
			if err := lock.Release(context.WithoutCancel(ctx), slot); err != nil {
				g.logger.Warn("could not release the restart lock", "lease", slot, "err", err)
			}
		}()
	}
	op, err := exec.Apply(ctx, write, r.tp.Old, r.tp.New)
	if err != nil {
		if op != nil {
			return problem(fmt.Errorf("operation %s: %w", op.ID, err))
		}
		return problem(err)
	}
	fmt.Fprintf(g.stdout, "Applied (operation %s): kubelet restarted and enforcing %s\n", op.ID, kubeletcfg.EvictionHardFlag(r.tp.New))
	return nil
}

func (o *applyOptions) executor(g *globalOptions, r *remediation, _ string) *remediate.Executor {
	var reps journal.MultiReporter
	if r.kube != nil && o.cfg.Kubernetes.NodeName != "" {
		reps = append(reps, remediate.EventReporter{Client: r.kube, Node: o.cfg.Kubernetes.NodeName, Log: g.logger})
	}
	if o.reporter != nil {
		reps = append(reps, o.reporter)
	}
	var rep journal.Reporter
	if len(reps) > 0 {
		rep = reps
	}
	e := &remediate.Executor{
		Journal:  r.journal,
		Systemd:  r.sd,
		Unit:     o.cfg.Actions.KubeletUnit,
		Health:   sdbus.HealthOptions{URL: o.cfg.Actions.Healthz, StableFor: r.policy.StableFor.Duration},
		Timeout:  r.policy.VerifyTimeout.Duration,
		Log:      g.logger,
		Reporter: rep,
	}
	e.AfterStep = hooks.afterStep(g.logger)
	return e
}

// verifier checks, until ctx ends, that the kubelet enforces want: on its command line and in
// its files as discovery reads them, in /configz, and (with an API server) that the Node is
// Ready.
func (o *applyOptions) verifier(g *globalOptions, r *remediation, version string) func(ctx context.Context, want map[string]string) error {
	return func(ctx context.Context, want map[string]string) error {
		var last error
		for {
			last = o.verifyOnce(ctx, g, r, version, want)
			if last == nil {
				return nil
			}
			g.logger.Debug("verification pending", "err", last)
			select {
			case <-ctx.Done():
				return last
			case <-time.After(time.Second):
			}
		}
	}
}

func (o *applyOptions) verifyOnce(ctx context.Context, g *globalOptions, r *remediation, version string, want map[string]string) error {
	eff, err := kubeletcfg.Discover(ctx, kubeletcfg.Options{HostRoot: g.root(), Version: version, NodeName: os.Getenv("NODE_NAME"), Logger: g.logger})
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	if got := kubeletcfg.CompleteHard(eff, nil); !equalEnforced(got, want) {
		return fmt.Errorf("the kubelet's command line and files give %s, want %s", kubeletcfg.EvictionHardFlag(got), kubeletcfg.EvictionHardFlag(want))
	}
	if o.cfg.Monitor.Configz.URL != "" {
		var body []byte
		var err error
		if r.configzAPI != nil {
			body, err = r.configzAPI.Fetch(ctx)
		} else {
			body, err = kubeletcfg.FetchConfigz(ctx, o.cfg.Monitor.Configz.URL, r.token)
		}
		if err != nil {
			return err
		}
		cz, err := kubeletcfg.ParseConfigz(body)
		if err != nil {
			return err
		}
		if !equalEnforced(cz.EvictionHard, want) {
			return fmt.Errorf("/configz evictionHard is %v, want %v", cz.EvictionHard, want)
		}
	}
	if r.kube != nil && o.cfg.Kubernetes.NodeName != "" {
		n, err := r.kube.GetNode(ctx, o.cfg.Kubernetes.NodeName)
		if err != nil {
			return fmt.Errorf("get node %s: %w", o.cfg.Kubernetes.NodeName, err)
		}
		var ready *corev1.NodeCondition
		for i, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = &n.Status.Conditions[i]
			}
		}
		if ready == nil || ready.Status != corev1.ConditionTrue {
			return fmt.Errorf("node %s is not Ready", o.cfg.Kubernetes.NodeName)
		}
		// Without a node lifecycle controller a stale Ready stays True: insist that the kubelet
		// running now has reported (status heartbeat or node Lease renewal since it started).
		if r.sd != nil {
			u, err := r.sd.Unit(ctx, o.cfg.Actions.KubeletUnit)
			if err != nil {
				return fmt.Errorf("read %s: %w", o.cfg.Actions.KubeletUnit, err)
			}
			since := u.InactiveExitTimestamp.Truncate(time.Second)
			if !ready.LastHeartbeatTime.Time.Before(since) {
				return nil
			}
			l, err := r.kube.GetLease(ctx, "kube-node-lease", o.cfg.Kubernetes.NodeName)
			if err != nil {
				return fmt.Errorf("node %s: Ready last reported %s, before the kubelet started (%s); node lease: %w",
					o.cfg.Kubernetes.NodeName, ready.LastHeartbeatTime.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339), err)
			}
			if l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(since) {
				return fmt.Errorf("node %s: Ready last reported %s and node lease not renewed since the kubelet started (%s)",
					o.cfg.Kubernetes.NodeName, ready.LastHeartbeatTime.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))
			}
		}
	}
	return nil
}
