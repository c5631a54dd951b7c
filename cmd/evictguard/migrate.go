package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/lease"
	"github.com/evictguard/evictguard/migration"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/policy"
	"github.com/evictguard/evictguard/sdbus"
	"github.com/evictguard/evictguard/treecopy"
)

type migrateOptions struct {
	runtime, to                        string
	dryRun, resume, rollback, yes      bool
	retry                              bool
	op, execute                        string
	busAddress, stateDir               string
	dockerSocket, dockerConfig         string
	containerdConfig, containerdSocket string
	runtimeUnits                       []string
	kubeletUnit, healthz               string
	keepOld, checksums                 bool
	margin                             string
	stableFor, unitTimeout             time.Duration
	drain                              bool
	drainTimeout                       time.Duration
	kubeconfig, nodeName               string
	lockSlots                          int
	lockNamespace, lockName            string
	lockTTL                            time.Duration
}

func newMigrateCommand(g *globalOptions) *cobra.Command {
	o := &migrateOptions{}
	cmd := &cobra.Command{
		Use:   "migrate --runtime docker|containerd --to DIR",
		Short: "Move the container runtime's data root to another filesystem, journaled, verified and resumable",
		Long: `Move the runtime's data root (docker's data-root, containerd's root) off nodefs to DIR on
another filesystem, as an operator would by hand (the incident in README.md), but safely:

  preflight   runtime and current root, DIR on another filesystem with room for the data plus a
              margin, not inside the root (nor the root inside it), d_type / trusted.* xattrs /
              whiteouts when the storage driver is overlay, root privileges; the plan is printed
              with sizes and the expected downtime
  lease       the cluster Lease (with --lock-slots and --kubeconfig)
  cordon,drain  with --drain: cordon (remembering if it already was) and evict through the
              Eviction API, honouring PodDisruptionBudgets
  precopy     bulk copy while the runtime runs
  preverify   still running: a catch-up copy of what changed meanwhile, then the copy is
              compared in full (a fault of the copy stops here, before any downtime)
  stop        kubelet, then the runtime (and docker.socket) over D-Bus
  delta       final incremental copy (changes and deletions)
  verify      counts, sizes, modes, owners, xattrs, hard links (contents with --checksums):
              what changed since the preverify in full, the rest by status
  config      daemon.json data-root (a legacy graph key is migrated) or config.toml root,
              atomically, with a backup in the journal
  start       runtime; it must report the new root and still hold its images, containers, volumes
  kubelet     restarted (it caches the imagefs decision) and healthy
  uncordon    only if evictguard cordoned
  cleanup     the old root is removed (or kept with --keep-old)

Every step is journaled. Killed at any point, 'evictguard migrate --resume' finishes the
migration and 'evictguard migrate --rollback' returns to the old root with the runtime running.
Refusals exit 2 and change nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMigrate(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	// The defaults of the settings the configuration file also has are its defaults.
	def := config.Default()
	f.StringVar(&o.runtime, "runtime", "", "docker or containerd (default: detect, as evictguard status does)")
	f.StringVar(&o.to, "to", "", "new data root (node path) on another filesystem; must be empty or absent")
	f.BoolVar(&o.dryRun, "dry-run", false, "run the preflight, print the plan and change nothing")
	f.BoolVar(&o.resume, "resume", false, "finish an interrupted migration from the journal")
	f.BoolVar(&o.rollback, "rollback", false, "return an interrupted migration to the old root")
	f.BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	f.StringVar(&o.op, "op", "", "with --resume or --rollback: the operation (journal id) to carry on; default the unfinished migration")
	f.StringVar(&o.execute, "execute", execAuto, "where the steps run: here (this process), host (a transient systemd unit on the node, followed from here) or auto (host when --host-root is not /)")
	f.BoolVar(&o.retry, "retry", false, "start a migration to --to even though the last one to it was rolled back")
	f.StringVar(&o.busAddress, "bus-address", "", "D-Bus address of the systemd manager (default: the system bus)")
	f.StringVar(&o.stateDir, "state-dir", def.Actions.StateDir, "node path of evictguard's journal and backups")
	f.StringVar(&o.dockerSocket, "docker-socket", "", "dockerd API socket (default /var/run/docker.sock under --host-root)")
	f.StringVar(&o.dockerConfig, "docker-config", "/etc/docker/daemon.json", "daemon.json (node path)")
	f.StringVar(&o.containerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd config.toml (node path)")
	f.StringVar(&o.containerdSocket, "containerd-socket", "", "containerd socket (default: the config's grpc.address)")
	f.StringSliceVar(&o.runtimeUnits, "runtime-units", nil, "runtime units to stop and start (default docker.socket,docker.service or containerd.service)")
	f.StringVar(&o.kubeletUnit, "kubelet-unit", def.Actions.KubeletUnit, "the kubelet's unit, restarted after the move")
	f.StringVar(&o.healthz, "healthz", def.Actions.Healthz, "kubelet /healthz URL checked after the restart")
	f.DurationVar(&o.stableFor, "stable-for", 5*time.Second, "how long the kubelet must stay healthy after the restart")
	f.DurationVar(&o.unitTimeout, "unit-timeout", policy.DefaultUnitTimeout, "timeout of each unit stop or start")
	f.BoolVar(&o.keepOld, "keep-old", false, "keep the old root as <old>.evictguard-backup-<op> instead of removing it")
	f.BoolVar(&o.checksums, "checksums", false, "also compare file contents (SHA-256) when verifying (longer downtime)")
	f.StringVar(&o.margin, "margin", "", "free space required beyond the data: a quantity (2Gi) or percent of the data (10%); default 10% and at least 16Mi")
	f.BoolVar(&o.drain, "drain", false, "cordon and drain the node first (needs --kubeconfig and --node-name)")
	f.DurationVar(&o.drainTimeout, "drain-timeout", policy.DefaultDrainTimeout, "give up draining after this long (PDBs may block evictions)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API server (drain, Lease)")
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.IntVar(&o.lockSlots, "lock-slots", 0, "take one of this many cluster Leases for the migration (0: none)")
	f.StringVar(&o.lockNamespace, "lock-namespace", "kube-system", "namespace of the Leases")
	f.StringVar(&o.lockName, "lock-name", "evictguard-restart", "name prefix of the Leases (shared with apply)")
	f.DurationVar(&o.lockTTL, "lock-ttl", policy.DefaultMigrationLockTTL, "Lease duration")
	return cmd
}

func (o *migrateOptions) options(ctx context.Context, g *globalOptions) (migration.Options, error) {
	mo := migration.Options{
		Root: g.root(), Runtime: o.runtime, Target: o.to, DockerSocket: o.dockerSocket, DockerConfig: o.dockerConfig,
		ContainerdConfig: o.containerdConfig, ContainerdSocket: o.containerdSocket, RuntimeUnits: o.runtimeUnits,
		KubeletUnit: o.kubeletUnit, KubeletHealthz: o.healthz, StableFor: o.stableFor, UnitTimeout: o.unitTimeout,
		KeepOld: o.keepOld, Checksums: o.checksums, Drain: o.drain, DrainTimeout: o.drainTimeout, NodeName: o.nodeName,
		Log: g.logger,
	}
	if o.margin != "" {
		if p, ok := strings.CutSuffix(o.margin, "%"); ok {
			var v float64
			if _, err := fmt.Sscanf(p, "%g", &v); err != nil || v < 0 {
				return mo, fmt.Errorf("--margin %q: not a percentage", o.margin)
			}
			mo.MarginPercent = v
			mo.MarginBytes = 1 // explicit: no 16Mi floor
		} else {
			q, err := resource.ParseQuantity(o.margin)
			if err != nil {
				return mo, fmt.Errorf("--margin %q: %w", o.margin, err)
			}
			mo.MarginBytes = max(q.Value(), 1)
		}
	}
	if o.kubeconfig != "" {
		kube, err := kubeClient(o.kubeconfig)
		if err != nil {
			return mo, err
		}
		mo.Kube = kube
	}
	if (o.drain || o.lockSlots > 0) && (mo.Kube == nil || o.nodeName == "") {
		return mo, errors.New("--drain and --lock-slots need --kubeconfig and --node-name")
	}
	if o.lockSlots > 0 {
		mo.Lock = &lease.Lock{Client: mo.Kube, Namespace: o.lockNamespace, Name: o.lockName, Slots: o.lockSlots, TTL: o.lockTTL, Identity: o.nodeName}
	}
	migrateHooks(g, &mo)
	return mo, nil
}

// migrateHooks sets the progress output and the crash test hook of a migration (shared with
// apply and the daemon).
func migrateHooks(g *globalOptions, mo *migration.Options) {
	terminal := false
	if f, ok := g.stderr.(*os.File); ok {
		terminal = term.IsTerminal(int(f.Fd()))
	}
	mo.Progress = func(pass string) func(treecopy.Progress) {
		return migration.ProgressPrinter(g.stderr, terminal, g.logger, pass)
	}
	mo.AfterStep = hooks.afterStep(g.logger)
}

func runMigrate(ctx context.Context, g *globalOptions, o *migrateOptions) error {
	if o.resume && o.rollback {
		return usageErr(errors.New("--resume and --rollback are mutually exclusive"))
	}
	if o.op != "" && !o.resume && !o.rollback {
		return usageErr(errors.New("--op names the operation to --resume or --rollback"))
	}
	mode, err := resolveExecute(o.execute, hostexec.View{Root: g.root(), Bus: o.busAddress})
	if err != nil {
		return usageErr(err)
	}
	mo, err := o.options(ctx, g)
	if err != nil {
		return usageErr(err)
	}
	// A preflight that refuses (or a dry run) must leave no trace, not even a journal directory.
	var pending *journal.Operation
	openJournal := func() error {
		if mo.Journal != nil {
			return nil
		}
		j, err := journal.Open(g.root(), o.stateDir, g.logger)
		if err != nil {
			return problem(err)
		}
		mo.Journal = j
		pending, err = migration.Unfinished(j)
		if err != nil {
			return problem(err)
		}
		return nil
	}
	if _, err := os.Stat(g.root().Path(filepath.Join(o.stateDir, "journal"))); err == nil || o.resume || o.rollback {
		if err := openJournal(); err != nil {
			return err
		}
	}
	// carryOn runs an operation already in the journal to its end, here or on the host;
	// fresh: it was begun by this invocation (not resumed or rolled back).
	carryOn := func(op *journal.Operation, action string, fresh bool) error {
		sd, err := o.systemd(ctx, g)
		if err != nil {
			return problem(err)
		}
		defer sd.Close()
		mo.Systemd = sd
		x := &migrationRunner{g: g, mode: mode, busAddress: o.busAddress, stateDir: o.stateDir, kubeconfig: o.kubeconfig, sd: sd}
		err = x.run(ctx, mo, op, action)
		if !errors.Is(err, errStoppedFollowing) {
			markReported(g, mo.Journal, op.ID) // printed here
		}
		if err != nil {
			if fresh {
				return problem(fmt.Errorf("operation %s: %w", op.ID, err))
			}
			return problem(fmt.Errorf("%s of %s: %w", action, op.ID, err))
		}
		if action == actionRollback {
			fmt.Fprintf(g.stdout, "Rolled back (operation %s): the runtime runs on its old data root again.\n", op.ID)
			return nil
		}
		done := "Resumed and finished"
		if fresh {
			done = "Migrated"
		}
		if p, err := migration.PlanOf(op); err == nil {
			fmt.Fprintf(g.stdout, "%s (operation %s): %s data root is now %s.\n", done, op.ID, p.Runtime, p.To)
		}
		return nil
	}

	if o.resume || o.rollback {
		action := actionResume
		if o.rollback {
			action = actionRollback
		}
		if o.op != "" {
			op, err := mo.Journal.Load(o.op)
			if err != nil {
				return usageErr(fmt.Errorf("--op %s: %w", o.op, err))
			}
			if op.Kind != journal.KindMigrateDataRoot || op.State != journal.StateInProgress {
				return usageErr(fmt.Errorf("--op %s: a %s operation that is %s: nothing to %s", o.op, op.Kind, op.State, action))
			}
			pending = op
		}
		if pending == nil {
			return usageErr(errors.New("no interrupted migration in the journal"))
		}
		return carryOn(pending, action, false)
	}

	if pending != nil {
		// The same migration asked for again (a restart policy re-running a one-shot, an
		// operator running it twice): carry that operation on, never start a second one.
		if p, err := migration.PlanOf(pending); err == nil && o.to != "" && filepath.Clean(p.To) == filepath.Clean(o.to) {
			g.logger.Warn("this migration is already in the journal, unfinished: carrying it on", "op", pending.ID, "after", pending.Step)
			return carryOn(pending, actionResume, false)
		}
		return usageErr(fmt.Errorf("migration %s was interrupted after step %q: run with --resume or --rollback first", pending.ID, pending.Step))
	}
	if o.to == "" {
		return usageErr(errors.New("--to is required"))
	}
	if mo.Runtime == "" {
		layout, err := monitor.DiscoverFilesystems(ctx, monitor.DiscoverOptions{HostRoot: g.root(), DockerSocket: o.dockerSocket,
			DockerConfig: o.dockerConfig, ContainerdConfig: o.containerdConfig, Logger: g.logger})
		if err != nil || layout.Runtime == "" {
			return usageErr(fmt.Errorf("no container runtime found: pass --runtime docker|containerd (%w)", err))
		}
		mo.Runtime = layout.Runtime
	}
	if mo.Runtime != migration.RuntimeDocker && mo.Runtime != migration.RuntimeContainerd {
		return usageErr(fmt.Errorf("refused: unknown runtime %q: evictguard migrates docker or containerd; nothing changed", mo.Runtime))
	}
	plan, err := migration.NewPlan(ctx, mo)
	if err != nil {
		return problem(err)
	}
	// Asked again for a move that was made (a restart policy re-running a one-shot, an
	// operator running it twice), or that was rolled back: report it, start nothing.
	var last *journal.Operation
	if mo.Journal != nil {
		if last, err = migration.LastTo(mo.Journal, o.to); err != nil {
			return problem(err)
		}
	}
	if plan.From != "" && filepath.Clean(plan.From) == filepath.Clean(o.to) {
		if last != nil && last.State == journal.StateDone {
			fmt.Fprintf(g.stdout, "Already migrated (operation %s, done at %s): the data root is %s; nothing to do.\n", last.ID, lastAt(last), o.to)
		} else {
			fmt.Fprintf(g.stdout, "The %s data root is already %s; nothing to do.\n", plan.Runtime, o.to)
		}
		return nil
	}
	if last != nil && !o.retry && (last.State == journal.StateRolledBack || last.State == journal.StateFailed) {
		return usageErr(fmt.Errorf("refused: the migration to %s (operation %s) ended %s at %s: %s; not starting another one (--retry does); nothing changed",
			o.to, last.ID, last.State, lastAt(last), lastNote(last)))
	}
	if err := printMigrationPlan(g, plan); err != nil {
		return err
	}
	if !plan.OK() {
		return usageErr(fmt.Errorf("refused: %s; nothing changed", strings.Join(plan.Refusals, "; ")))
	}
	if o.dryRun {
		fmt.Fprintln(g.stdout, "Dry run: nothing changed.")
		return nil
	}
	if err := openJournal(); err != nil {
		return err
	}
	if !o.yes {
		fmt.Fprint(g.stdout, "Stop the runtime and the kubelet and move the data root? Type yes: ")
		if !confirmLine(os.Stdin) {
			return problem(errors.New("not confirmed"))
		}
	}
	op, err := migration.Begin(mo, plan)
	if err != nil {
		return problem(err)
	}
	return carryOn(op, actionResume, true)
}

func confirmLine(in io.Reader) bool {
	var line string
	_, _ = fmt.Fscanln(in, &line)
	return strings.TrimSpace(line) == "yes"
}

func (o *migrateOptions) systemd(ctx context.Context, g *globalOptions) (*sdbus.Client, error) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if addr := (hostexec.View{Root: g.root(), Bus: o.busAddress}).BusAddress(); addr != "" {
		return sdbus.NewWithAddress(sctx, g.logger, addr)
	}
	return sdbus.New(sctx, g.logger)
}

func printMigrationPlan(g *globalOptions, p *migration.Plan) error {
	if g.output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Runtime\t%s (storage driver %q)\n", p.Runtime, p.Driver)
	if p.From != "" {
		fmt.Fprintf(w, "From\t%s (%s; %s; on nodefs: %t)\n", p.From, p.FromSource, p.FromFs, p.SharesNodeFs)
	}
	if p.To != "" {
		fmt.Fprintf(w, "To\t%s (%s, %s available)\n", p.To, p.ToFs, units.Bytes(p.ToAvail))
	}
	if p.Config != "" {
		fmt.Fprintf(w, "Config\t%s: %s\n", p.Config, p.ConfigKey)
	}
	if p.Used.Inodes > 0 {
		fmt.Fprintf(w, "Data\t%s allocated (%s apparent), %d inodes; need %s on the target\n",
			units.Bytes(p.Used.Bytes), units.Bytes(p.Used.Apparent), p.Used.Inodes, units.Bytes(p.Need))
	}
	if p.Facts != nil {
		fmt.Fprintf(w, "Holds\t%s\n", p.Facts)
	}
	if p.RateBytesPerSecond > 0 {
		fmt.Fprintf(w, "Copy\t~%s at %s/s measured (pre-copy, runtime running)\n", p.EstimatedCopy.Round(time.Second), units.Bytes(int64(p.RateBytesPerSecond)))
	}
	if p.Used.Inodes > 0 {
		fmt.Fprintf(w, "Downtime\t~%s (stop, delta copy, verify, rewrite, start, kubelet restart)\n", p.EstimatedDowntime.Round(time.Second))
		fmt.Fprintf(w, "Units\t%s; then %s restarted\n", strings.Join(p.Units, ", "), p.KubeletUnit)
		old := "removed after verification"
		if p.KeepOld {
			old = "kept as a backup"
		}
		fmt.Fprintf(w, "Old root\t%s\n", old)
	}
	for _, s := range p.Warnings {
		fmt.Fprintf(w, "Warning\t%s\n", s)
	}
	for _, s := range p.Refusals {
		fmt.Fprintf(w, "REFUSED\t%s\n", s)
	}
	return w.Flush()
}

// lastAt is when op's last step was recorded.
func lastAt(op *journal.Operation) string {
	if len(op.History) == 0 {
		return op.Started.Format(time.RFC3339)
	}
	return op.History[len(op.History)-1].At.Format(time.RFC3339)
}
