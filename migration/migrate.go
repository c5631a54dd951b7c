package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/lease"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/sdbus"
	"github.com/evictguard/evictguard/treecopy"
)

// Steps of a data-root migration, in order, as recorded in the journal. A crash after any of
// them is resumed (Resume) or rolled back (Rollback).
const (
	StepLease        = "lease"         // cluster Lease taken (if configured)
	StepCordon       = "cordon"        // node cordoned (if draining), prior state remembered
	StepDrain        = "drain"         // pods evicted through the Eviction API
	StepPrecopy      = "precopy"       // bulk copy while the runtime runs
	StepPreverify    = "preverify"     // catch-up copy and verification while the runtime runs
	StepStop         = "stop"          // kubelet and runtime (and its socket) stopped
	StepDelta        = "delta"         // final incremental copy with deletions
	StepVerify       = "verify"        // copy compared with the original
	StepConfig       = "config"        // daemon.json / config.toml points at the new root
	StepStartRuntime = "start-runtime" // runtime started, reports the new root and its data
	StepKubelet      = "kubelet"       // kubelet started (imagefs re-detected) and healthy
	StepUncordon     = "uncordon"      // node uncordoned if we cordoned it
	StepCleanup      = "cleanup"       // old root removed or kept as a backup, by policy
	StepRelease      = "release"       // cluster Lease released
)

// Steps lists the steps' names in order (the journal's step names).
var Steps = func() []string {
	names := make([]string, len(steps))
	for i, st := range steps {
		names[i] = st.name
	}
	return names
}()

// Runtimes evictguard can migrate.
const (
	RuntimeDocker     = monitor.RuntimeDocker
	RuntimeContainerd = monitor.RuntimeContainerd
)

// Systemd is the part of the systemd client a migration uses.
type Systemd interface {
	Unit(ctx context.Context, name string) (*sdbus.UnitInfo, error)
	Start(ctx context.Context, unit string, timeout time.Duration) error
	Stop(ctx context.Context, unit string, timeout time.Duration) error
	WaitHealthy(ctx context.Context, unit string, opts sdbus.HealthOptions) error
}

// Options configures a migration of the runtime's data root. Paths named "node path"
// are as the node sees them; they are read under Root.
type Options struct {
	Root    hostfs.Root
	Runtime string // docker or containerd
	Target  string // node path of the new data root

	// DockerConfig is daemon.json (node path, default /etc/docker/daemon.json).
	DockerConfig string
	// DockerSocket is dockerd's API socket as this process sees it (default
	// /var/run/docker.sock under Root).
	DockerSocket string
	// ContainerdConfig is config.toml (node path, default /etc/containerd/config.toml).
	ContainerdConfig string
	// ContainerdSocket is containerd's gRPC/CRI socket as this process sees it (default: the
	// config's grpc.address, else /run/containerd/containerd.sock, under Root).
	ContainerdSocket string

	// RuntimeUnits are stopped and started again; default docker.socket + docker.service, or
	// containerd.service. Every X.service comes with its X.socket (added if not listed): a
	// socket left listening would start the runtime again, on the old root, at the next
	// connection. Sockets are stopped before and started before the services; units the
	// manager does not know are skipped, and a socket that was not active stays stopped.
	RuntimeUnits []string
	// KubeletUnit (default kubelet.service) is stopped before and restarted after, because the
	// kubelet caches the imagefs decision until it restarts (k/k #96732).
	KubeletUnit string
	// KubeletHealthz is checked after the restart (default http://127.0.0.1:10248/healthz).
	KubeletHealthz string
	// StableFor: the kubelet must stay healthy this long (default 5s).
	StableFor time.Duration
	// UnitTimeout bounds each stop/start job (default 2m).
	UnitTimeout time.Duration

	// MarginBytes and MarginPercent (of the data) must be free on the target beyond the data
	// (the larger applies; default 10 % and at least 16 MiB).
	MarginBytes   int64
	MarginPercent float64
	// KeepOld keeps the old root (renamed to <old>.evictguard-backup-<op>) after a verified
	// migration; otherwise it is removed to free the space.
	KeepOld bool
	// Checksums makes verification compare contents (SHA-256), not only metadata.
	Checksums bool

	// Kube and NodeName enable cordon/drain and the Lease; Drain asks for them.
	Kube         kube.Interface
	NodeName     string
	Drain        bool
	DrainTimeout time.Duration // default 5m
	// Lock, if set, is the cluster Lease taken for the duration of the migration.
	Lock *lease.Lock

	Journal *journal.Journal
	Systemd Systemd
	Log     *slog.Logger
	// Progress returns the progress callback for a copy pass ("pre-copy", "delta"); nil: logs.
	Progress func(pass string) func(treecopy.Progress)
	// AfterStep, if set, runs after each journaled step (a test hook for crash safety).
	AfterStep func(step string)
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.DockerConfig == "" {
		o.DockerConfig = "/etc/docker/daemon.json"
	}
	if o.DockerSocket == "" {
		o.DockerSocket = o.Root.Path("/var/run/docker.sock")
	}
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = "/etc/containerd/config.toml"
	}
	if len(o.RuntimeUnits) == 0 {
		switch o.Runtime {
		case RuntimeDocker:
			o.RuntimeUnits = []string{"docker.socket", "docker.service"}
		case RuntimeContainerd:
			o.RuntimeUnits = []string{"containerd.service"}
		}
	}
	o.RuntimeUnits = withSocketUnits(o.RuntimeUnits)
	if o.KubeletUnit == "" {
		o.KubeletUnit = "kubelet.service"
	}
	if o.KubeletHealthz == "" {
		o.KubeletHealthz = "http://127.0.0.1:10248/healthz"
	}
	if o.StableFor == 0 {
		o.StableFor = 5 * time.Second
	}
	if o.UnitTimeout == 0 {
		o.UnitTimeout = 2 * time.Minute
	}
	if o.MarginPercent == 0 && o.MarginBytes == 0 {
		o.MarginPercent = 10
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = func(pass string) func(treecopy.Progress) {
			return ProgressPrinter(nil, false, o.Log, pass)
		}
	}
}

// Plan is the preflight's result: what would be moved where, whether it fits, and
// why not.
type Plan struct {
	Runtime    string         `json:"runtime"`
	From       string         `json:"from"` // node path of the current data root
	FromSource string         `json:"fromSource"`
	To         string         `json:"to"`
	Config     string         `json:"config"`    // node path of the file to rewrite
	ConfigKey  string         `json:"configKey"` // data-root / root
	Driver     string         `json:"driver,omitempty"`
	Facts      *RuntimeFacts  `json:"facts,omitempty"` // nil when the runtime is not running
	Used       treecopy.Usage `json:"used"`
	FromFs     string         `json:"fromFs"`
	ToFs       string         `json:"toFs"`
	ToAvail    int64          `json:"toAvailableBytes"`
	ToInodes   int64          `json:"toInodesFree"`
	Need       int64          `json:"needBytes"`
	// SharesNodeFs: the current root is on nodefs (the situation migration fixes).
	SharesNodeFs bool `json:"sharesNodeFs"`
	// RateBytesPerSecond is the copy rate measured on a sample (0 when nothing to sample).
	RateBytesPerSecond float64       `json:"rateBytesPerSecond"`
	EstimatedCopy      time.Duration `json:"estimatedCopy"`
	EstimatedDowntime  time.Duration `json:"estimatedDowntime"`
	Units              []string      `json:"units"`
	KubeletUnit        string        `json:"kubeletUnit"`
	Drain              bool          `json:"drain"`
	KeepOld            bool          `json:"keepOld"`
	// Checksums and DrainTimeout are the options that change what the operation does; they are
	// journaled with the plan so that a --resume (or the daemon finishing an operation at
	// start) does what the interrupted invocation was asked to, whatever its own flags say.
	Checksums    bool          `json:"checksums,omitempty"`
	DrainTimeout time.Duration `json:"drainTimeout,omitempty"`
	Refusals     []string      `json:"refusals,omitempty"`
	Warnings     []string      `json:"warnings,omitempty"`
}

// OK reports whether nothing refuses the migration.
func (p *Plan) OK() bool { return len(p.Refusals) == 0 }

func (p *Plan) refuse(format string, args ...any) {
	p.Refusals = append(p.Refusals, fmt.Sprintf(format, args...))
}

// NewPlan runs the preflight. It changes nothing on the node (a scratch directory on the
// target filesystem is created and removed to probe its features and rate). Refusals are in
// the plan; an error means the preflight itself could not run.
func NewPlan(ctx context.Context, opts Options) (*Plan, error) {
	opts.defaults()
	root := opts.Root
	p := &Plan{Runtime: opts.Runtime, Units: knownUnits(ctx, opts.Systemd, opts.RuntimeUnits), KubeletUnit: opts.KubeletUnit, Drain: opts.Drain, KeepOld: opts.KeepOld,
		Checksums: opts.Checksums, DrainTimeout: opts.DrainTimeout}
	switch opts.Runtime {
	case RuntimeDocker:
		p.Config, p.ConfigKey = opts.DockerConfig, "data-root"
	case RuntimeContainerd:
		p.Config, p.ConfigKey = opts.ContainerdConfig, "root"
	default:
		p.refuse("unknown runtime %q: evictguard migrates docker or containerd", opts.Runtime)
		return p, nil
	}
	if os.Geteuid() != 0 {
		p.refuse("must run as root: the copy preserves owners, devices and trusted.* xattrs")
	}
	if !filepath.IsAbs(opts.Target) {
		p.refuse("--to %q must be an absolute path", opts.Target)
		return p, nil
	}
	p.To = filepath.Clean(opts.Target)

	// The current root: the running runtime's word first, then its config, then the default.
	var err error
	p.From, p.FromSource, p.Driver, p.Facts, err = currentRoot(ctx, &opts)
	if err != nil {
		p.refuse("%v", err)
		return p, nil
	}
	if p.Facts == nil {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s is not running: its images and containers cannot be counted before the move", opts.Runtime))
	}
	refuseSurvivors(p, opts)
	fromHost := root.Path(p.From)
	if st, err := os.Stat(fromHost); err != nil || !st.IsDir() {
		p.refuse("the current data root %s (%s) is not a directory: %v", p.From, p.FromSource, err)
		return p, nil
	}
	switch {
	case p.To == p.From:
		p.refuse("--to %s is the current data root", p.To)
	case within(p.To, p.From):
		p.refuse("--to %s is inside the current data root %s", p.To, p.From)
	case within(p.From, p.To):
		p.refuse("the current data root %s is inside --to %s", p.From, p.To)
	}
	if ents, err := os.ReadDir(root.Path(p.To)); err == nil && len(ents) > 0 {
		p.refuse("--to %s exists and is not empty", p.To)
	} else if err == nil || errors.Is(err, os.ErrNotExist) {
	} else {
		p.refuse("--to %s: %v", p.To, err)
	}
	fromFs, err := statFS(fromHost)
	if err != nil {
		return nil, err
	}
	toFs, err := statFS(root.Path(p.To))
	if err != nil {
		p.refuse("--to %s: %v", p.To, err)
		return p, nil
	}
	p.FromFs, p.ToFs = fromFs.Type, toFs.Type
	p.ToAvail, p.ToInodes = toFs.Avail, toFs.Free
	if fromFs.Dev == toFs.Dev {
		p.refuse("--to %s is on the same filesystem as the current data root %s: moving it frees nothing", p.To, p.From)
	}
	// nodefs: the kubelet's root dir (or /).
	if nfs, err := statFS(root.Path(monitor.DefaultKubeletRootDir)); err == nil {
		p.SharesNodeFs = nfs.Dev == fromFs.Dev
	}

	if p.Used, err = treecopy.DiskUsage(ctx, fromHost); err != nil {
		return nil, err
	}
	margin := max(opts.MarginBytes, int64(float64(p.Used.Bytes)*opts.MarginPercent/100))
	if opts.MarginBytes == 0 {
		margin = max(margin, 16<<20)
	}
	p.Need = p.Used.Bytes + margin
	if p.ToAvail < p.Need {
		p.refuse("--to %s has %s available; the data root holds %s and the margin is %s: need %s",
			p.To, units.Bytes(p.ToAvail), units.Bytes(p.Used.Bytes), units.Bytes(margin), units.Bytes(p.Need))
	}
	if p.ToInodes > 0 && p.ToInodes < p.Used.Inodes+p.Used.Inodes/10 {
		p.refuse("--to %s has %d free inodes; the data root uses %d", p.To, p.ToInodes, p.Used.Inodes)
	}
	if fromFs.Dev != toFs.Dev && len(p.Refusals) == 0 {
		feat, err := probeFS(toFs.Existing)
		if err != nil {
			p.refuse("--to %s: %v", p.To, err)
		} else if strings.Contains(p.Driver, "overlay") {
			if !feat.DType {
				p.refuse("--to %s (%s) does not report d_type; the %s storage driver needs it (XFS: mkfs with ftype=1)", p.To, p.ToFs, p.Driver)
			}
			if !feat.TrustedXattr {
				p.refuse("--to %s (%s) cannot hold trusted.* xattrs; the %s storage driver needs them", p.To, p.ToFs, p.Driver)
			}
			if !feat.Whiteout {
				p.refuse("--to %s (%s) cannot hold whiteouts (character device 0:0); the %s storage driver needs them", p.To, p.ToFs, p.Driver)
			}
		} else if !feat.DType || !feat.TrustedXattr {
			p.Warnings = append(p.Warnings, fmt.Sprintf("--to %s lacks d_type or trusted.* xattrs: fine for %q, not for overlay", p.To, p.Driver))
		}
		p.RateBytesPerSecond = treecopy.SampleRate(ctx, fromHost, toFs.Existing)
	}
	if p.RateBytesPerSecond > 0 {
		p.EstimatedCopy = time.Duration(float64(p.Used.Apparent) / p.RateBytesPerSecond * float64(time.Second))
	}
	// Downtime: stop + start of the runtime and kubelet, a metadata-only delta walk of every
	// inode and the verification's lstat of both sides (~20µs each, generously), and a delta
	// of ~2 % of the data. The full comparison (and the checksums of unchanged files) runs
	// before the stop; after it only the changed ~2 % are read again.
	walk := time.Duration(p.Used.Inodes) * 40 * time.Microsecond
	p.EstimatedDowntime = 10*time.Second + walk + p.EstimatedCopy/50
	if opts.Checksums {
		p.EstimatedDowntime += p.EstimatedCopy / 50
	}
	return p, nil
}

// currentRoot finds the data root (node path), how it was found, the storage driver and, if
// the runtime answers, its facts.
func currentRoot(ctx context.Context, o *Options) (root, source, driver string, facts *RuntimeFacts, err error) {
	switch o.Runtime {
	case RuntimeDocker:
		cfg, cerr := os.ReadFile(o.Root.Path(o.DockerConfig))
		if cerr == nil && len(strings.TrimSpace(string(cfg))) > 0 {
			var c map[string]any
			if err := json.Unmarshal(cfg, &c); err != nil {
				return "", "", "", nil, fmt.Errorf("%s: %w", o.DockerConfig, err)
			}
			if s, _ := c["data-root"].(string); s != "" {
				root, source = s, o.DockerConfig+" data-root"
			} else if s, _ := c["graph"].(string); s != "" {
				root, source = s, o.DockerConfig+" graph (legacy)"
			}
			driver, _ = c["storage-driver"].(string)
		}
		if f, ferr := dockerFacts(ctx, o.DockerSocket); ferr == nil {
			if root != "" && filepath.Clean(root) != filepath.Clean(f.Root) {
				return "", "", "", nil, fmt.Errorf("%s says the data root is %s but the running dockerd uses %s (restart pending?): refusing to guess", o.DockerConfig, root, f.Root)
			}
			if root == "" {
				// A --data-root flag: evictguard could not change it through daemon.json.
				source = "docker API DockerRootDir"
			}
			root, driver, facts = f.Root, f.Driver, &f
		} else {
			o.Log.Info("docker API not answering; using its config", "socket", o.DockerSocket, "err", ferr)
		}
		if root == "" {
			root, source = "/var/lib/docker", "default"
		}
	case RuntimeContainerd:
		cfg, cerr := os.ReadFile(o.Root.Path(o.ContainerdConfig))
		if cerr != nil {
			return "", "", "", nil, fmt.Errorf("containerd config %s: %w", o.ContainerdConfig, cerr)
		}
		r, addr, snap, perr := parseContainerdConfig(cfg)
		if perr != nil {
			return "", "", "", nil, fmt.Errorf("%s: %w", o.ContainerdConfig, perr)
		}
		root, source, driver = r, o.ContainerdConfig+" root", snap
		if root == "" {
			root, source = "/var/lib/containerd", "default"
		}
		if driver == "" {
			driver = "overlayfs"
		}
		setContainerdSocket(o, addr)
		if f, ferr := criFacts(ctx, o.ContainerdSocket); ferr == nil {
			if !within(filepath.Clean(f.Root), filepath.Clean(root)) {
				return "", "", "", nil, fmt.Errorf("%s says the root is %s but the running containerd stores images at %s: refusing to guess", o.ContainerdConfig, root, f.Root)
			}
			facts = &f
		} else {
			o.Log.Info("containerd CRI not answering", "socket", o.ContainerdSocket, "err", ferr)
		}
	}
	return filepath.Clean(root), source, driver, facts, nil
}

// setContainerdSocket fills o.ContainerdSocket, unless given, from the config's grpc.address
// (addr; "" reads it from o.ContainerdConfig), else containerd's default, under the host root
// when it exists there.
func setContainerdSocket(o *Options, addr string) {
	if o.ContainerdSocket != "" {
		return
	}
	if addr == "" {
		if cfg, err := os.ReadFile(o.Root.Path(o.ContainerdConfig)); err == nil {
			_, addr, _, _ = parseContainerdConfig(cfg)
		}
	}
	if addr == "" {
		addr = "/run/containerd/containerd.sock"
	}
	o.ContainerdSocket = o.Root.Path(addr)
	if _, err := os.Stat(o.ContainerdSocket); err != nil {
		o.ContainerdSocket = addr
	}
}

// migrationState is the operation's Data: everything resume and rollback need.
type migrationState struct {
	Plan        Plan            `json:"plan"`
	Lease       string          `json:"lease,omitempty"`
	Cordoned    bool            `json:"cordoned,omitempty"`    // we cordoned the node
	WasCordoned bool            `json:"wasCordoned,omitempty"` // it already was
	Precopy     *treecopy.Stats `json:"precopy,omitempty"`
	// The preverify step: a catch-up pass (what changed during the pre-copy) and a live
	// verification, so that the stopped runtime waits only for what changed after them.
	Precopied    treecopy.TimeMark     `json:"precopied,omitzero"`   // the pre-copy began
	CaughtUp     treecopy.TimeMark     `json:"caughtUp,omitzero"`    // the catch-up pass began
	Preverified  treecopy.TimeMark     `json:"preverified,omitzero"` // the live verification began
	Catchup      *treecopy.Stats       `json:"catchup,omitempty"`
	Preverify    *treecopy.VerifyStats `json:"preverify,omitempty"`
	Delta        *treecopy.Stats       `json:"delta,omitempty"`
	Verify       *treecopy.VerifyStats `json:"verify,omitempty"`
	StoppedAt    time.Time             `json:"stoppedAt,omitzero"`
	StartedAt    time.Time             `json:"startedAt,omitzero"`
	Active       map[string]bool       `json:"active,omitempty"` // units active before the stop
	KubeletFound bool                  `json:"kubeletFound,omitempty"`
	Backup       string                `json:"backup,omitempty"`     // node path of the kept old root
	OldRemoved   bool                  `json:"oldRemoved,omitempty"` // the old root is gone: no rollback
}

func loadState(op *journal.Operation) (*migrationState, error) {
	b, err := json.Marshal(op.Data["migration"])
	if err != nil {
		return nil, err
	}
	var s migrationState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("operation %s: migration state: %w", op.ID, err)
	}
	if s.Plan.From == "" || s.Plan.To == "" {
		return nil, fmt.Errorf("operation %s has no migration state", op.ID)
	}
	return &s, nil
}

func saveState(op *journal.Operation, s *migrationState) {
	b, _ := json.Marshal(s)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if op.Data == nil {
		op.Data = map[string]any{}
	}
	op.Data["migration"] = m
}

// Migration runs one migration operation.
type migration struct {
	o  Options
	op *journal.Operation
	s  *migrationState
}

// Run carries out a plan (from NewPlan, with no refusals): journal, then every step
// in Steps. On a failure before the runtime runs on the new root it rolls back; the
// returned operation says what happened.
func Run(ctx context.Context, opts Options, plan *Plan) (*journal.Operation, error) {
	if opts.Systemd == nil {
		return nil, errors.New("migration needs a journal and a systemd client")
	}
	op, err := Begin(opts, plan)
	if err != nil {
		return nil, err
	}
	return op, Resume(ctx, opts, op)
}

// Begin journals a migration of plan (in progress, before its first step) without
// carrying out any step: the operation is then run by Resume, here or by an
// `evictguard migrate --resume --op ID` on the host (package hostexec). It refuses as Migrate
// does: a refused plan, a failed operation, an unfinished one.
func Begin(opts Options, plan *Plan) (*journal.Operation, error) {
	opts.defaults()
	if !plan.OK() {
		return nil, fmt.Errorf("migration refused: %s", strings.Join(plan.Refusals, "; "))
	}
	if opts.Journal == nil {
		return nil, errors.New("migration needs a journal and a systemd client")
	}
	if failed, err := opts.Journal.Failed(); err != nil {
		return nil, err
	} else if len(failed) > 0 {
		return nil, fmt.Errorf("operation %s failed earlier and needs an operator (evictguard apply --clear)", failed[0].ID)
	}
	if unfinished, err := opts.Journal.Unfinished(); err != nil {
		return nil, err
	} else if len(unfinished) > 0 {
		return nil, fmt.Errorf("operation %s (%s) is unfinished: --resume or --rollback it first", unfinished[0].ID, unfinished[0].Kind)
	}
	s := &migrationState{Plan: *plan}
	data := map[string]any{}
	op, err := opts.Journal.Begin(journal.KindMigrateDataRoot, data)
	if err != nil {
		return nil, err
	}
	saveState(op, s)
	if err := opts.Journal.Save(op); err != nil {
		return nil, err
	}
	return op, nil
}

// refuseSurvivors refuses a migration that would leave containers running from the old root
// through the stop: dockerd's live-restore keeps them running while dockerd is stopped, so
// their files would be copied while in use and deleted by the cleanup. evictguard does not
// stop workloads behind the operator's back; it names them.
func refuseSurvivors(p *Plan, opts Options) {
	if opts.Runtime != RuntimeDocker {
		return
	}
	live := p.Facts != nil && p.Facts.LiveRestore
	if !live {
		if b, err := os.ReadFile(opts.Root.Path(opts.DockerConfig)); err == nil {
			var cfg struct {
				LiveRestore bool `json:"live-restore"`
			}
			live = json.Unmarshal(b, &cfg) == nil && cfg.LiveRestore
		}
	}
	switch {
	case !live:
	case p.Facts != nil && len(p.Facts.Running) > 0:
		p.refuse("dockerd runs with live-restore and %d container(s) are running (%s): they would keep running from %s while docker.service is stopped, be copied while in use and lose their files when the old root is removed; stop them (docker stop) or turn live-restore off, then migrate",
			len(p.Facts.Running), strings.Join(p.Facts.Running, ", "), p.From)
	default:
		p.Warnings = append(p.Warnings, "dockerd runs with live-restore: containers started before the stop keep running from the old root; the stop step checks for them and rolls back if any")
	}
}

// Unfinished returns the interrupted migration, or nil.
func Unfinished(j *journal.Journal) (*journal.Operation, error) {
	ops, err := j.Unfinished()
	if err != nil {
		return nil, err
	}
	for _, op := range slices.Backward(ops) {
		if op.Kind == journal.KindMigrateDataRoot {
			return op, nil
		}
	}
	return nil, nil
}

// Resume finishes an interrupted migration from the step after its last one.
func Resume(ctx context.Context, opts Options, op *journal.Operation) error {
	opts.defaults()
	s, err := loadState(op)
	if err != nil {
		return err
	}
	opts.fromPlan(&s.Plan)
	m := &migration{o: opts, op: op, s: s}
	opts.Log.Info("resuming migration", "op", op.ID, "after", op.Step, "checksums", opts.Checksums, "keepOld", opts.KeepOld)
	return m.forward(ctx, op.Step)
}

// fromPlan takes what the interrupted invocation was asked to do from its journaled plan, for
// --resume and --rollback, whatever their own flags say: the runtime and its units, draining,
// keeping the old root, the drain timeout. A resuming invocation may ask for more
// verification (--checksums), never for less.
func (o *Options) fromPlan(p *Plan) {
	o.Runtime = p.Runtime
	o.RuntimeUnits, o.KubeletUnit = p.Units, p.KubeletUnit
	o.Drain, o.KeepOld = p.Drain, p.KeepOld
	o.Checksums = o.Checksums || p.Checksums
	if p.DrainTimeout > 0 {
		o.DrainTimeout = p.DrainTimeout
	}
	if o.Runtime == RuntimeContainerd {
		setContainerdSocket(o, "")
	}
}

func (m *migration) step(step, note string) error {
	saveState(m.op, m.s)
	if err := m.o.Journal.Step(m.op, step, note); err != nil {
		return err
	}
	if m.o.AfterStep != nil {
		m.o.AfterStep(step)
	}
	return nil
}

func (m *migration) forward(ctx context.Context, after string) error {
	next := 0
	if after != "" {
		next = slices.Index(Steps, after) + 1
	}
	for _, st := range steps[next:] {
		step := st.name
		note, err := st.run(m, ctx)
		if err != nil {
			err = fmt.Errorf("migration step %s: %w", step, err)
			m.o.Log.Error("migration step failed", "op", m.op.ID, "step", step, "err", err)
			if slices.Index(Steps, step) <= slices.Index(Steps, StepStartRuntime) {
				if rerr := m.rollback(context.WithoutCancel(ctx)); rerr != nil {
					_ = m.o.Journal.Finish(m.op, journal.StateFailed, rerr.Error())
					return errors.Join(err, fmt.Errorf("rollback failed: %w", rerr))
				}
				return fmt.Errorf("%w (rolled back to %s)", err, m.s.Plan.From)
			}
			// The runtime runs on the new root: the data is safe there; leave the operation
			// unfinished so that --resume retries the rest.
			return fmt.Errorf("%w (the runtime runs on %s; --resume to finish)", err, m.s.Plan.To)
		}
		if err := m.step(step, note); err != nil {
			return err
		}
	}
	return m.o.Journal.Finish(m.op, journal.StateDone, fmt.Sprintf("%s data root moved from %s to %s", m.s.Plan.Runtime, m.s.Plan.From, m.s.Plan.To))
}

func (m *migration) host(p string) string { return m.o.Root.Path(p) }

// namedStep is one step of a migration. run returns the note the journal records with the
// step's name once it has returned; a resumption starts after the last recorded step.
type namedStep struct {
	name string
	run  func(m *migration, ctx context.Context) (string, error)
}

// steps is the migration, in order.
var steps = []namedStep{
	{StepLease, (*migration).takeLease},
	{StepCordon, (*migration).cordon},
	{StepDrain, (*migration).drain},
	{StepPrecopy, (*migration).precopy},
	{StepPreverify, (*migration).preverify},
	{StepStop, (*migration).stop},
	{StepDelta, (*migration).delta},
	{StepVerify, (*migration).verify},
	{StepConfig, (*migration).config},
	{StepStartRuntime, (*migration).startRuntimeStep},
	{StepKubelet, (*migration).kubelet},
	{StepUncordon, (*migration).uncordon},
	{StepCleanup, (*migration).cleanup},
	{StepRelease, (*migration).releaseLease},
}

// takeLease takes a slot of the cluster Lease, if one is configured.
func (m *migration) takeLease(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if o.Lock == nil || s.Lease != "" {
		return "no lease configured", nil
	}
	slot, why, err := o.Lock.Acquire(ctx)
	if err != nil {
		return "", err
	}
	if slot == "" {
		return "", errors.New(why)
	}
	s.Lease = slot
	return "holding " + o.Lock.Namespace + "/" + slot, nil
}

// cordon cordons the node when draining, remembering whether it already was.
func (m *migration) cordon(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if !o.Drain || o.Kube == nil || o.NodeName == "" {
		return "not draining", nil
	}
	if s.Cordoned {
		return "already cordoned by us", nil
	}
	was, err := setUnschedulable(ctx, o.Kube, o.NodeName, true)
	if err != nil {
		return "", err
	}
	s.WasCordoned, s.Cordoned = was, !was
	if was {
		return "node was already cordoned", nil
	}
	return "cordoned " + o.NodeName, nil
}

// drain evicts the pods through the Eviction API when draining.
func (m *migration) drain(ctx context.Context) (string, error) {
	o := &m.o
	if !o.Drain || o.Kube == nil || o.NodeName == "" {
		return "not draining", nil
	}
	return "drained " + o.NodeName, drainNode(ctx, o.Kube, o.NodeName, o.DrainTimeout, o.Log)
}

// precopy copies the root while the runtime runs.
func (m *migration) precopy(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if err := os.MkdirAll(filepath.Dir(m.host(s.Plan.To)), 0o755); err != nil {
		return "", err
	}
	s.Precopied = treecopy.MarkNow()
	saveState(m.op, s)
	st, err := treecopy.Copy(ctx, m.host(s.Plan.From), m.host(s.Plan.To), treecopy.Options{Delete: true, TotalBytes: s.Plan.Used.Apparent,
		Progress: o.Progress("pre-copy"), Log: o.Log})
	if err != nil {
		return "", err
	}
	s.Precopy = &st
	down := 10*time.Second + time.Duration(s.Plan.Used.Inodes)*40*time.Microsecond
	return fmt.Sprintf("%s in %s (%s/s); expected downtime ~%s", units.Bytes(st.Bytes), st.Duration.Round(time.Millisecond),
		units.Bytes(int64(st.Rate())), down.Round(time.Second)), nil
}

// stop stops the kubelet and the runtime (its sockets first), remembering what ran.
func (m *migration) stop(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if s.Active == nil {
		s.Active = map[string]bool{}
		for _, u := range append([]string{o.KubeletUnit}, s.Plan.Units...) {
			info, err := o.Systemd.Unit(ctx, u)
			if errors.Is(err, sdbus.ErrUnitNotFound) {
				continue
			}
			if err != nil {
				return "", err
			}
			if u == o.KubeletUnit {
				s.KubeletFound = true
			}
			s.Active[u] = info.ActiveState == "active" || info.ActiveState == "activating" || info.ActiveState == "reloading"
		}
		// Persist before stopping anything: a crash mid-stop must know what to start again.
		saveState(m.op, s)
		if err := o.Journal.Save(m.op); err != nil {
			return "", err
		}
	}
	s.StoppedAt = time.Now()
	pods, err := m.stopAll(ctx)
	if err != nil {
		return "", err
	}
	// What outlived the stop (containers of a live-restore dockerd, containerd's shims)
	// still runs from the old root: copying it would copy a moving tree, and the cleanup
	// would delete files from under it. Fail, and roll back to the old root.
	if err := m.assertUnpinned(); err != nil {
		return "", fmt.Errorf("containers outlived stopping %s (live-restore, or a runtime's shims): %w", strings.Join(m.stopOrder(), ", "), err)
	}
	note := "stopped " + strings.Join(m.stopOrder(), ", ")
	if len(pods) > 0 {
		note += fmt.Sprintf("; %d pod sandbox(es) stopped through CRI for the kubelet to create again (%s)", len(pods), strings.Join(pods, ", "))
	}
	return note, nil
}

// delta copies what changed since the catch-up, with deletions, while everything is stopped.
func (m *migration) delta(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if err := m.assertStopped(ctx); err != nil {
		return "", err
	}
	since, why := m.deltaSince()
	if why != "" {
		o.Log.Warn("the delta pass compares every entry", "why", why)
	}
	st, err := treecopy.Copy(ctx, m.host(s.Plan.From), m.host(s.Plan.To), treecopy.Options{Since: since, Delete: true,
		Progress: o.Progress("delta"), Log: o.Log})
	if err != nil {
		return "", err
	}
	s.Delta = &st
	return fmt.Sprintf("%d file(s), %s, %d deleted in %s", st.Files, units.Bytes(st.Bytes), st.Deleted, st.Duration.Round(time.Millisecond)), nil
}

// verify compares the copy with the original and makes it durable.
func (m *migration) verify(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	vo := treecopy.VerifyOptions{Checksums: o.Checksums}
	if why := m.incrementalVerify(&vo); why != "" {
		o.Log.Warn("the verification compares every entry in full", "why", why)
	}
	vs, err := treecopy.Verify(ctx, m.host(s.Plan.From), m.host(s.Plan.To), vo)
	if err != nil {
		return "", err
	}
	// Still stopped: nothing wrote to the old root behind the copy's back.
	if err := m.assertStopped(ctx); err != nil {
		return "", err
	}
	s.Verify = &vs
	// Durable before the config step points the runtime at it.
	syncStart := time.Now()
	if err := syncFilesystem(m.host(s.Plan.To)); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d entries, %d files, %s, %d hard links, %d xattrs identical (checksums: %t; %d unchanged since the pre-verification compared by status); %s synced to its device in %s",
		vs.Entries, vs.Files, units.Bytes(vs.Bytes), vs.HardLinks, vs.Xattrs, vs.Checksums, vs.StatOnly, s.Plan.To, time.Since(syncStart).Round(time.Millisecond)), nil
}

// config points the runtime's config file at the new root (journaled, backed up).
func (m *migration) config(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	cur, err := os.ReadFile(m.host(s.Plan.Config))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	next, err := SetRuntimeRoot(s.Plan.Runtime, cur, s.Plan.To)
	if err != nil {
		return "", err
	}
	perm := os.FileMode(0o644)
	if st, err := os.Stat(m.host(s.Plan.Config)); err == nil {
		perm = st.Mode().Perm()
	}
	if err := o.Journal.WriteFile(m.op, s.Plan.Config, next, perm); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s = %s", s.Plan.Config, s.Plan.ConfigKey, s.Plan.To), nil
}

// startRuntimeStep starts the runtime and checks it reports the new root and its data.
func (m *migration) startRuntimeStep(ctx context.Context) (string, error) {
	s := m.s
	if err := m.startRuntime(ctx); err != nil {
		return "", err
	}
	f, err := m.checkRuntime(ctx, s.Plan.To)
	if err != nil {
		return "", err
	}
	s.StartedAt = time.Now()
	return fmt.Sprintf("started %s; %s reports %s", strings.Join(m.startOrder(), ", "), s.Plan.Runtime, f), nil
}

// kubelet starts the kubelet again if it ran, and waits for it to be healthy.
func (m *migration) kubelet(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if !s.KubeletFound || !s.Active[o.KubeletUnit] {
		return "no active kubelet unit before the migration", nil
	}
	if err := m.startKubelet(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s healthy; runtime downtime %s", o.KubeletUnit, s.StartedAt.Sub(s.StoppedAt).Round(time.Millisecond)), nil
}

// uncordon uncordons the node if this migration cordoned it.
func (m *migration) uncordon(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if !s.Cordoned {
		return "left as it was", nil
	}
	if _, err := setUnschedulable(ctx, o.Kube, o.NodeName, false); err != nil {
		return "", err
	}
	s.Cordoned = false
	return "uncordoned " + o.NodeName, nil
}

// cleanup removes the old root, or keeps it as a backup by policy.
func (m *migration) cleanup(context.Context) (string, error) {
	s := m.s
	from := m.host(s.Plan.From)
	if s.Plan.KeepOld {
		s.Backup = fmt.Sprintf("%s.evictguard-backup-%s", s.Plan.From, m.op.ID)
		saveState(m.op, s)
		if err := os.Rename(from, m.host(s.Backup)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("keep the old root: %w", err)
		}
		return "old root kept at " + s.Backup, nil
	}
	// Never delete what a running container still uses (checked again: something may have
	// started from the old root since the stop).
	if err := m.assertUnpinned(); err != nil {
		return "", fmt.Errorf("the old root is not removed: %w", err)
	}
	s.OldRemoved = true
	saveState(m.op, s)
	if err := m.o.Journal.Save(m.op); err != nil {
		return "", err
	}
	if err := removeTree(from); err != nil {
		return "", fmt.Errorf("remove the old root: %w", err)
	}
	return "old root " + s.Plan.From + " removed", nil
}

// releaseLease releases the cluster Lease slot.
func (m *migration) releaseLease(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	if s.Lease == "" || o.Lock == nil {
		return "no lease held", nil
	}
	if err := o.Lock.Release(ctx, s.Lease); err != nil {
		return "", err
	}
	s.Lease = ""
	return "released", nil
}

// removeTree removes the contents of dir and dir itself; a mount point (the old root on a
// filesystem of its own) is emptied and left. It never crosses into another filesystem: a
// directory on another device below dir (something mounted there) stops the removal with an
// error before anything in it is touched, unlike os.RemoveAll, which descends into mounts.
func removeTree(dir string) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	if err := removeOneFS(dir, st.Dev); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, os.ErrPermission) {
		return err
	}
	return nil
}

// removeOneFS removes what is inside dir, depth first, staying on device dev.
func removeOneFS(dir string, dev uint64) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		if st.Dev != dev {
			return fmt.Errorf("%s is a mount point (another filesystem): refusing to remove across it", p)
		}
		if err := removeOneFS(p, dev); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// withSocketUnits returns units with X.socket added before every X.service that lacks it.
func withSocketUnits(units []string) []string {
	out := make([]string, 0, len(units)+1)
	for _, u := range units {
		if name, ok := strings.CutSuffix(u, ".service"); ok && !slices.Contains(units, name+".socket") {
			out = append(out, name+".socket")
		}
		out = append(out, u)
	}
	return out
}

func isSocketUnit(u string) bool { return strings.HasSuffix(u, ".socket") }

// knownUnits drops the units the manager does not know (a runtime without a socket unit),
// so that the plan names what will be stopped; without a systemd client, or when the manager
// does not answer, it keeps them all (the stop step skips unknown units again).
func knownUnits(ctx context.Context, sd Systemd, units []string) []string {
	if sd == nil {
		return units
	}
	out := make([]string, 0, len(units))
	for _, u := range units {
		if _, err := sd.Unit(ctx, u); errors.Is(err, sdbus.ErrUnitNotFound) {
			continue
		}
		out = append(out, u)
	}
	return out
}

// stopOrder is the kubelet, then the runtime's sockets (so that nothing can start the runtime
// again), then its other units, each only if the manager knows it.
func (m *migration) stopOrder() []string {
	var out []string
	if m.s.KubeletFound {
		out = append(out, m.o.KubeletUnit)
	}
	for _, sockets := range []bool{true, false} {
		for _, u := range m.s.Plan.Units {
			if _, known := m.s.Active[u]; known && isSocketUnit(u) == sockets {
				out = append(out, u)
			}
		}
	}
	return out
}

// startOrder is the runtime's sockets that were active before the stop, then its other units
// in reverse order. A service is started even if it was inactive (socket-activated and idle):
// the migration has to see it answer on the new root.
func (m *migration) startOrder() []string {
	var out []string
	units := m.s.Plan.Units
	for _, u := range units {
		if isSocketUnit(u) && m.s.Active[u] {
			out = append(out, u)
		}
	}
	for i := len(units) - 1; i >= 0; i-- {
		if _, known := m.s.Active[units[i]]; known && !isSocketUnit(units[i]) {
			out = append(out, units[i])
		}
	}
	return out
}

// assertStopped fails when a runtime unit the stop step stopped is running again (activated
// by something the migration does not know of): copying under a running runtime would lose
// its writes.
func (m *migration) assertStopped(ctx context.Context) error {
	for _, u := range m.stopOrder() {
		info, err := m.o.Systemd.Unit(ctx, u)
		if errors.Is(err, sdbus.ErrUnitNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if info.ActiveState != "inactive" && info.ActiveState != "failed" {
			return fmt.Errorf("%s is %s again while the data root is copied (started by another unit?)", u, info.ActiveState)
		}
	}
	return nil
}

// assertUnpinned fails when a mount in any namespace still uses the old root (FindPins).
func (m *migration) assertUnpinned() error {
	from := m.s.Plan.From
	pins, err := FindPins(m.o.Root, from)
	if err != nil {
		return fmt.Errorf("look for mounts that use %s: %w", from, err)
	}
	if len(pins) > 0 {
		return pinnedError(from, pins)
	}
	return nil
}

// stopAll stops the kubelet, then (containerd, with a kubelet) the pods' sandboxes through CRI,
// then the runtime's units. It returns the pods stopped.
func (m *migration) stopAll(ctx context.Context) ([]string, error) {
	var pods []string
	for _, u := range m.stopOrder() {
		if err := m.o.Systemd.Stop(ctx, u, m.o.UnitTimeout); err != nil {
			return pods, err
		}
		if u == m.o.KubeletUnit && m.s.Plan.Runtime == RuntimeContainerd && m.o.ContainerdSocket != "" {
			// Not fatal: containerd may be down already (a rollback, a resumed stop). Whatever
			// still runs from the old root is caught by the check for mounts after the stop.
			stopped, err := criStopPodSandboxes(ctx, m.o.ContainerdSocket, m.o.UnitTimeout)
			pods = append(pods, stopped...)
			if err != nil {
				m.o.Log.Warn("could not stop the pods' sandboxes through CRI", "err", err)
			}
		}
	}
	return pods, nil
}

// startRuntime starts the runtime's units in startOrder.
func (m *migration) startRuntime(ctx context.Context) error {
	for _, u := range m.startOrder() {
		if err := m.o.Systemd.Start(ctx, u, m.o.UnitTimeout); err != nil {
			return err
		}
	}
	return nil
}

func (m *migration) startKubelet(ctx context.Context) error {
	u := m.o.KubeletUnit
	if err := m.o.Systemd.Start(ctx, u, m.o.UnitTimeout); err != nil {
		return err
	}
	return m.o.Systemd.WaitHealthy(ctx, u, sdbus.HealthOptions{URL: m.o.KubeletHealthz, StableFor: m.o.StableFor, Timeout: 2 * time.Minute})
}

// checkRuntime waits until the runtime answers, reports root and still holds what it held.
func (m *migration) checkRuntime(ctx context.Context, root string) (RuntimeFacts, error) {
	s := m.s
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for {
		var f RuntimeFacts
		var err error
		if s.Plan.Runtime == RuntimeDocker {
			f, err = dockerFacts(ctx, m.o.DockerSocket)
			if err == nil && filepath.Clean(f.Root) != root {
				err = fmt.Errorf("dockerd reports DockerRootDir %s, want %s", f.Root, root)
			}
		} else {
			f, err = criFacts(ctx, m.o.ContainerdSocket)
			if err == nil && !within(filepath.Clean(f.Root), root) {
				err = fmt.Errorf("containerd stores images at %s, want below %s", f.Root, root)
			}
		}
		if err == nil && s.Plan.Facts != nil {
			b := s.Plan.Facts
			if f.Images < b.Images || f.Containers < b.Containers || f.Volumes < b.Volumes {
				err = fmt.Errorf("%s lost data: before %s; now %s", s.Plan.Runtime, b, f)
			}
		}
		if err == nil {
			return f, nil
		}
		last = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			return f, last
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Rollback returns an interrupted (or finished-with-errors) migration to the old
// root: the config is restored, the runtime restarted on the old root and checked, the
// kubelet restarted, the node uncordoned if we cordoned it, the Lease released. A copy the
// runtime never ran on is removed; one it ran on is kept (it may hold newer data) and named
// in the log.
func Rollback(ctx context.Context, opts Options, op *journal.Operation) error {
	opts.defaults()
	s, err := loadState(op)
	if err != nil {
		return err
	}
	opts.fromPlan(&s.Plan)
	if s.OldRemoved {
		// Nothing was changed: the operation stays unfinished and --resume still finishes it.
		return fmt.Errorf("operation %s already removed the old root %s: nothing to roll back to (the data is at %s; --resume to finish)", op.ID, s.Plan.From, s.Plan.To)
	}
	m := &migration{o: opts, op: op, s: s}
	if err := m.rollback(ctx); err != nil {
		_ = opts.Journal.Finish(op, journal.StateFailed, err.Error())
		return err
	}
	return nil
}

func (m *migration) rollback(ctx context.Context) error {
	o, s, op := &m.o, m.s, m.op
	if s.OldRemoved {
		return fmt.Errorf("operation %s already removed the old root %s: nothing to roll back to (the data is at %s)", op.ID, s.Plan.From, s.Plan.To)
	}
	reached := slices.Index(Steps, op.Step)
	o.Log.Warn("rolling back migration", "op", op.ID, "last_step", op.Step)
	if s.Backup != "" {
		if _, err := os.Stat(m.host(s.Backup)); err == nil {
			if err := os.Rename(m.host(s.Backup), m.host(s.Plan.From)); err != nil {
				return fmt.Errorf("restore the old root from %s: %w", s.Backup, err)
			}
		}
	}
	stopped := reached >= slices.Index(Steps, StepPreverify) // the stop may have begun
	if stopped && s.Active != nil {
		if _, err := m.stopAll(ctx); err != nil {
			return err
		}
	}
	if err := o.Journal.RestoreFiles(op); err != nil {
		return err
	}
	ranOnNew := reached >= slices.Index(Steps, StepConfig)
	if stopped && s.Active != nil {
		if err := m.startRuntime(ctx); err != nil {
			return err
		}
		if _, err := m.checkRuntime(ctx, s.Plan.From); err != nil {
			return err
		}
		if s.KubeletFound && s.Active[o.KubeletUnit] {
			if err := m.startKubelet(ctx); err != nil {
				return err
			}
		}
	}
	if !ranOnNew {
		if err := removeTree(m.host(s.Plan.To)); err != nil {
			return fmt.Errorf("remove the partial copy %s: %w", s.Plan.To, err)
		}
	} else {
		o.Log.Warn("the copy the runtime ran on is kept; remove it when you no longer need it", "path", s.Plan.To)
	}
	if s.Cordoned {
		if _, err := setUnschedulable(ctx, o.Kube, o.NodeName, false); err != nil {
			return err
		}
		s.Cordoned = false
	}
	if s.Lease != "" && o.Lock != nil {
		if err := o.Lock.Release(ctx, s.Lease); err != nil {
			return err
		}
		s.Lease = ""
	}
	saveState(op, s)
	return o.Journal.Finish(op, journal.StateRolledBack, fmt.Sprintf("%s data root back at %s", s.Plan.Runtime, s.Plan.From))
}

// Candidate says whether the daemon's planner may propose a data-root migration for
// layout: only when imagefs shares nodefs (the runtime's data eats the kubelet's filesystem,
// the incident in README.md) and the runtime is one evictguard migrates. The policy decides the rest.
func Candidate(l *monitor.Layout) (bool, string) {
	switch {
	case l == nil:
		return false, "filesystem layout unknown"
	case l.Runtime != RuntimeDocker && l.Runtime != RuntimeContainerd:
		return false, fmt.Sprintf("runtime %q cannot be migrated", l.Runtime)
	case l.DedicatedImageFs:
		return false, "imagefs already has its own filesystem"
	}
	return true, "imagefs shares nodefs"
}

// PlanOf returns the plan journaled with a migration operation.
func PlanOf(op *journal.Operation) (*Plan, error) {
	if op.Kind != journal.KindMigrateDataRoot {
		return nil, fmt.Errorf("operation %s is a %s, not a migration", op.ID, op.Kind)
	}
	s, err := loadState(op)
	if err != nil {
		return nil, fmt.Errorf("operation %s: %w", op.ID, err)
	}
	return &s.Plan, nil
}

// LastTo returns the latest migration operation (in any state) whose target is to,
// or nil: a command started again with the same --to (by a restart policy, or an operator
// running it twice) reports that operation rather than starting a second one.
func LastTo(j *journal.Journal, to string) (*journal.Operation, error) {
	ops, err := j.List()
	if err != nil {
		return nil, err
	}
	for _, op := range slices.Backward(ops) {
		if op.Kind != journal.KindMigrateDataRoot {
			continue
		}
		if p, err := PlanOf(op); err == nil && filepath.Clean(p.To) == filepath.Clean(to) {
			return op, nil
		}
	}
	return nil, nil
}
