package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/sdbus"
)

// Where a journaled migration's steps run (docs/remediation.md, "Where the work runs").
const (
	execAuto = "auto" // host from a container (--host-root other than /), here on the node
	execHere = "here" // this process
	execHost = "host" // a transient systemd unit on the node (package hostexec)
)

const (
	actionResume   = "resume"
	actionRollback = "rollback"
)

// resolveExecute turns --execute into here or host. Running the steps here from inside a
// container is refused: the process would live on the runtime it stops, and copy through its
// container's mount namespace.
func resolveExecute(mode string, view hostexec.View) (string, error) {
	switch mode {
	case "", execAuto:
		if view.InContainer() {
			return execHost, nil
		}
		return execHere, nil
	case execHere:
		if view.InContainer() {
			return "", fmt.Errorf("--execute here with the node mounted at %s: a migration must not run inside a container (it would be stopped with the runtime and copy through the container's mounts); use --execute host", view.Root)
		}
		return execHere, nil
	case execHost:
		return execHost, nil
	}
	return "", fmt.Errorf("--execute %q: want auto, here or host", mode)
}

// errStoppedFollowing: this process stopped following an operation that goes on in its unit
// on the host; its outcome is not known here (nor reported).
var errStoppedFollowing = errors.New("stopped following operation")

// migrationRunner carries out a journaled migration operation (just begun, or interrupted)
// to its end: in this process, or as the operation's unit on the host, which it then follows
// (its journaled steps are logged as they complete).
type migrationRunner struct {
	g    *globalOptions
	mode string // execHere or execHost
	// For a unit: the bus as this process reaches it, the state dir, and this process's
	// kubeconfig ("" = in-cluster when available) whose credentials are lent to the unit.
	busAddress, stateDir, kubeconfig string
	sd                               *sdbus.Client
	// poll is how often the follower reads the unit and the journal.
	poll time.Duration
}

func (x *migrationRunner) run(ctx context.Context, mo migration.Options, op *journal.Operation, action string) error {
	if x.mode == execHere {
		// A signal must not abandon the operation half way (a stop job waited on, a copy
		// half done): it goes on to done or rolled back. SIGKILL leaves it resumable.
		stop := context.AfterFunc(ctx, func() {
			x.g.logger.Warn("signal received: the operation goes on until it is done or rolled back", "op", op.ID)
		})
		defer stop()
		if action == actionRollback {
			return migration.Rollback(context.WithoutCancel(ctx), mo, op)
		}
		return migration.Resume(context.WithoutCancel(ctx), mo, op)
	}
	return x.onHost(ctx, mo, op, action)
}

func (x *migrationRunner) host() *hostexec.Host {
	return &hostexec.Host{Root: x.g.root(), Bus: x.busAddress, StateDir: x.stateDir, Systemd: x.sd, Log: x.g.logger}
}

// onHost starts the operation's unit (unless it runs already: then it is adopted) and follows
// it until it ends.
func (x *migrationRunner) onHost(ctx context.Context, mo migration.Options, op *journal.Operation, action string) error {
	return x.hostRun(ctx, mo, op, action, true)
}

// hostRun is onHost; again allows one more unit when an adopted one ends short.
func (x *migrationRunner) hostRun(ctx context.Context, mo migration.Options, op *journal.Operation, action string, again bool) error {
	h := x.host()
	st, err := h.Status(ctx, op.ID)
	if err != nil {
		return fmt.Errorf("operation %s: %w", op.ID, err)
	}
	var creds *hostexec.Credentials
	if mo.Kube != nil {
		// Lent to a unit started here, and to an adopted one as well: the token of the pod
		// that started it stops working once that pod is deleted.
		cfg, err := kube.Config(x.kubeconfig, 0, 0)
		if err != nil {
			return fmt.Errorf("operation %s: API credentials for the host unit: %w", op.ID, err)
		}
		if creds, err = h.LendCredentials(op.ID, cfg); err != nil {
			return fmt.Errorf("operation %s: %w", op.ID, err)
		}
	}
	adopted := st.Running
	if st.Running {
		x.g.logger.Info("adopting the operation running on the host", "op", op.ID, "unit", st.Unit, "step", op.Step)
	} else {
		run := hostexec.Run{
			OpID:        op.ID,
			Description: "evictguard " + op.Kind + " " + op.ID + " (" + action + ")",
			Args:        x.unitArgs(mo, op.ID, action, creds),
			Env:         hooks.env(),
		}
		err := h.Start(ctx, run)
		switch {
		case errors.Is(err, sdbus.ErrUnitExists):
			adopted = true
			x.g.logger.Info("adopting the operation running on the host", "op", op.ID, "unit", st.Unit)
		case err != nil:
			creds.Revoke()
			return fmt.Errorf("operation %s: %w", op.ID, err)
		default:
			x.g.logger.Info("operation running on the host", "op", op.ID, "unit", st.Unit, "action", action, "after", op.Step)
		}
	}
	last := op.Step
	werr := h.Wait(ctx, op.ID, x.poll, func() {
		if err := creds.Refresh(); err != nil {
			x.g.logger.Warn("could not refresh the token lent to the host unit", "op", op.ID, "err", err)
		}
		cur, err := mo.Journal.Load(op.ID)
		if err != nil || len(cur.History) == 0 {
			return
		}
		for _, rec := range historyAfter(cur.History, last) {
			x.g.logger.Info("operation step", "op", op.ID, "step", rec.Step, "note", rec.Note)
			last = rec.Step
		}
	})
	if werr != nil {
		// Signalled (or the caller gave up): the unit goes on.
		return fmt.Errorf("%w %s (after step %q): it goes on on the host as %s; its outcome is in the journal (evictguard migrate --resume adopts it): %w", errStoppedFollowing, op.ID, last, st.Unit, werr)
	}
	creds.Revoke()
	cur, err := mo.Journal.Load(op.ID)
	if err != nil {
		return fmt.Errorf("operation %s: %w", op.ID, err)
	}
	if again && adopted && cur.State == journal.StateInProgress && action == actionResume {
		// The adopted unit stopped short (e.g. its lent token died with the pod that lent
		// it): carry the operation on once more in a unit of our own, with our credentials.
		x.g.logger.Warn("the adopted operation's unit ended before the operation; resuming it in a new unit", "op", op.ID, "after", cur.Step)
		*op = *cur
		return x.hostRun(ctx, mo, op, action, false)
	}
	*op = *cur
	switch cur.State {
	case journal.StateDone:
		return nil
	case journal.StateRolledBack:
		return fmt.Errorf("%s (rolled back on the host)", lastNote(cur))
	case journal.StateFailed:
		return fmt.Errorf("%s (failed on the host: the operation needs an operator)", lastNote(cur))
	}
	return fmt.Errorf("the host unit %s ended with the operation unfinished after step %q; --resume finishes it. Its output:\n%s", st.Unit, cur.Step, h.OutputTail(op.ID, 2048))
}

// historyAfter is the records after the last one named step ("" = all but "begin").
func historyAfter(h []journal.StepRecord, step string) []journal.StepRecord {
	start := 0
	for i, rec := range h {
		if rec.Step == step {
			start = i + 1
		}
	}
	var out []journal.StepRecord
	for _, rec := range h[start:] {
		if rec.Step != "begin" {
			out = append(out, rec)
		}
	}
	return out
}

func lastNote(op *journal.Operation) string {
	if len(op.History) == 0 {
		return op.State
	}
	return op.History[len(op.History)-1].Note
}

// unitArgs is the command the host unit runs: this very migration, resumed (or rolled back)
// by operation id, with every option that the journaled plan does not carry, in node paths.
func (x *migrationRunner) unitArgs(mo migration.Options, opID, action string, creds *hostexec.Credentials) []string {
	view := hostexec.View{Root: x.g.root(), Bus: x.busAddress}
	a := []string{"migrate", "--" + action, "--op", opID, "--execute", execHere, "--host-root", string(view.UnitRoot()),
		"--state-dir", x.stateDir, "--log-level", x.g.logLevel}
	if bus := view.UnitBusAddress(); bus != "" {
		a = append(a, "--bus-address", bus)
	}
	str := func(flag, v string) {
		if v != "" {
			a = append(a, flag, v)
		}
	}
	// Sockets are found under the root: passed as the node sees them.
	str("--docker-socket", view.HostPath(mo.DockerSocket))
	str("--docker-config", mo.DockerConfig)
	str("--containerd-config", mo.ContainerdConfig)
	str("--containerd-socket", view.HostPath(mo.ContainerdSocket))
	str("--healthz", mo.KubeletHealthz)
	if mo.StableFor > 0 {
		a = append(a, "--stable-for", mo.StableFor.String())
	}
	if mo.UnitTimeout > 0 {
		a = append(a, "--unit-timeout", mo.UnitTimeout.String())
	}
	if mo.Checksums {
		a = append(a, "--checksums")
	}
	str("--node-name", mo.NodeName)
	if creds != nil {
		a = append(a, "--kubeconfig", creds.Kubeconfig)
		if l := mo.Lock; l != nil {
			a = append(a, "--lock-slots", strconv.Itoa(l.Slots), "--lock-namespace", l.Namespace, "--lock-name", l.Name, "--lock-ttl", l.TTL.String())
		}
	}
	return a
}
