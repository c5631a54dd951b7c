package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/monitor"
)

// The daemon follows its filesystems: the runtime's data root can move without it (an
// operator's `evictguard migrate` or `apply`, or daemon.json edited and the runtime
// restarted by hand), and then imagefs is another filesystem with other thresholds. The
// layout is discovered again every --rediscover-interval, and at once when the journal shows
// a migration that finished since the last look. Only a layout that differs in what the
// monitor evaluates replaces the running one, so fill-rate history and signal states are
// kept otherwise.

// followOptions are run's settings for following the filesystems.
type followOptions struct {
	cfg *config.Configuration // runOptions.cfg
	// running is the daemon's follower, which a reload hands a new interval.
	running *layoutFollower
}

func (f *followOptions) addFlags(fs *pflag.FlagSet) {
	b := binder{fs}
	b.dur(&f.cfg.Monitor.RediscoverInterval.Duration, "monitor.rediscoverInterval", "rediscover-interval", "discover the filesystems again this often, to follow a data root moved by evictguard migrate or by hand without a restart "+
		"(0: only when the journal under --state-dir shows a finished migration)")
}

// followWarnEvery rate-limits the warning of a failing re-discovery: the old layout stays in
// use, so one line per period says so without flooding the journal.
const followWarnEvery = 10 * time.Minute

// followRetryFor is how long a journal-triggered re-discovery is retried (each poll) while
// the runtime does not answer yet or discovery fails: with the periodic path off, nothing
// else would look again.
const followRetryFor = 2 * time.Minute

// layoutFollower re-discovers the monitor's filesystems (run in its own goroutine, so a slow
// runtime API never delays a monitoring cycle).
type layoutFollower struct {
	log      *slog.Logger
	discover func(context.Context) (*monitor.Layout, error)
	current  func() *monitor.Layout
	set      func(*monitor.Layout) error
	// journal lists the operations under --state-dir; journalDir is its directory (host
	// path), whose mtime changes with every entry written (atomic rename), so a stat per
	// poll is all an idle journal costs.
	journal interface {
		List() ([]*journal.Operation, error)
	}
	journalDir string
	interval   atomic.Int64 // time.Duration; a reload changes it (setInterval)
	// opts are the discovery options (the setup's, which discover reads); a reload changes
	// the extra log directories in them (setLogDirs), under mu.
	opts *monitor.DiscoverOptions
	// reconfigured: the options changed; the next poll re-discovers.
	reconfigured atomic.Bool
	poll         time.Duration
	now          func() time.Time

	// mu serialises re-discoveries with the one the daemon's own migration runs
	// (afterOwnMigration), so that an older layout never replaces a newer one.
	mu sync.Mutex

	dirStamp                  time.Time         // journalDir's mtime at the last List
	seen                      map[string]string // finished migrations already followed: id → state
	lastDiscover              time.Time
	retryUntil                time.Time // a journal-triggered re-discovery is retried until then
	holding                   bool      // the runtime did not answer at the last re-discovery
	discoverWarn, journalWarn rateLimited
}

// rateLimited logs a failure the first time and then at most every followWarnEvery, and
// once when it is over.
type rateLimited struct {
	failing bool
	last    time.Time
}

func (r *rateLimited) warn(log *slog.Logger, now time.Time, msg string, err error, attrs ...any) {
	if r.failing && now.Sub(r.last) < followWarnEvery {
		return
	}
	r.failing, r.last = true, now
	log.Warn(msg, append(attrs, "err", err)...)
}

func (r *rateLimited) ok(log *slog.Logger, msg string, attrs ...any) {
	if r.failing {
		r.failing = false
		log.Info(msg, attrs...)
	}
}

// newLayoutFollower follows s's layout for `run`. Migrations already in the journal are
// taken as seen: the layout was just discovered after them.
func newLayoutFollower(g *globalOptions, o *runOptions, s *setup) (*layoutFollower, error) {
	if o.follow.cfg.Monitor.RediscoverInterval.Duration < 0 {
		return nil, usageErr(fmt.Errorf("--rediscover-interval must not be negative, not %v", o.follow.cfg.Monitor.RediscoverInterval.Duration))
	}
	j, err := journal.Open(g.root(), o.remediation.cfg.Actions.StateDir, g.logger)
	if err != nil {
		return nil, problem(fmt.Errorf("follow filesystems: %w", err))
	}
	stateDir := o.remediation.cfg.Actions.StateDir
	if stateDir == "" {
		stateDir = journal.DefaultStateDir
	}
	f := &layoutFollower{
		log: g.logger,
		discover: func(ctx context.Context) (*monitor.Layout, error) {
			return monitor.DiscoverFilesystems(ctx, s.discover)
		},
		opts:       &s.discover,
		current:    s.monitor.Layout,
		set:        s.monitor.SetLayout,
		journal:    j,
		journalDir: g.root().Path(filepath.Join(stateDir, "journal")), // journal.Journal's layout
		poll:       max(o.cfg.Monitor.Interval.Duration, time.Second),
		now:        time.Now,
		seen:       map[string]string{},
	}
	f.setInterval(o.follow.cfg.Monitor.RediscoverInterval.Duration)
	o.follow.running = f
	f.lastDiscover = f.now()
	f.journalChanged() // baseline
	return f, nil
}

// setInterval changes the period of the periodic re-discovery (0: off); the next poll uses
// it, counting from the last re-discovery.
func (f *layoutFollower) setInterval(d time.Duration) { f.interval.Store(int64(d)) }

// setLogDirs replaces the extra log directories discovery accounts for (a reload of
// monitor.logDirs); the next poll re-discovers, and the monitor takes the new directories
// as any other layout change, keeping the state of the filesystems it still watches.
func (f *layoutFollower) setLogDirs(dirs []string) {
	f.mu.Lock()
	if f.opts != nil {
		f.opts.ExtraLogDirs = slices.Clone(dirs)
	}
	f.mu.Unlock()
	f.reconfigured.Store(true)
}

// afterOwnMigration is the daemon's remediation pass's hook after it moved the data root:
// it re-discovers at once (setup.rediscover), serialised with the follower.
func (f *layoutFollower) afterOwnMigration(s *setup) func(context.Context) {
	return func(ctx context.Context) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := s.rediscover(ctx, f.log); err != nil && ctx.Err() == nil {
			f.log.Warn("the data root moved but the filesystems could not be re-discovered: restart evictguard run", "err", err)
		}
	}
}

// run polls until ctx ends.
func (f *layoutFollower) run(ctx context.Context) {
	f.log.Info("following the filesystems", "rediscoverInterval", time.Duration(f.interval.Load()), "journal", f.journalDir)
	t := time.NewTicker(f.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.check(ctx)
		}
	}
}

// check re-discovers when the journal shows a finished migration, a journal-triggered
// re-discovery is to be retried, or the periodic interval has passed.
func (f *layoutFollower) check(ctx context.Context) {
	now := f.now()
	reason := ""
	switch ids := f.journalChanged(); {
	case len(ids) > 0:
		reason = "migration finished: " + strings.Join(ids, ", ")
		f.retryUntil = now.Add(followRetryFor)
	case f.reconfigured.Swap(false):
		reason = "configuration reloaded"
		f.retryUntil = now.Add(followRetryFor)
	case now.Before(f.retryUntil):
		reason = "retry"
	case f.interval.Load() > 0 && now.Sub(f.lastDiscover) >= time.Duration(f.interval.Load()):
		reason = "periodic"
	default:
		return
	}
	if f.refresh(ctx, reason) {
		f.retryUntil = time.Time{}
	}
}

// journalChanged lists the journal when its directory changed since the last look and
// returns the migrations that finished since (recording them as seen). A journal that
// cannot be read is logged (rate-limited) and looked at again next poll.
func (f *layoutFollower) journalChanged() []string {
	st, err := os.Stat(f.journalDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing journaled yet
	}
	if err != nil {
		f.journalWarn.warn(f.log, f.now(), "following the journal failed; re-discovering periodically only", err, "journal", f.journalDir)
		return nil
	}
	if st.ModTime().Equal(f.dirStamp) {
		return nil
	}
	ops, err := f.journal.List()
	if err != nil {
		// A corrupt entry, or one being replaced: try again at the next poll.
		f.journalWarn.warn(f.log, f.now(), "following the journal failed; re-discovering periodically only", err, "journal", f.journalDir)
		return nil
	}
	f.journalWarn.ok(f.log, "following the journal works again", "journal", f.journalDir)
	f.dirStamp = st.ModTime()
	return finishedMigrations(ops, f.seen)
}

// refresh discovers the layout and hands it to the monitor when it differs. It reports
// whether it is done: the layout was taken or found unchanged (not: discovery failed, or
// the runtime did not answer).
func (f *layoutFollower) refresh(ctx context.Context, reason string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastDiscover = f.now()
	next, err := f.discover(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.discoverWarn.warn(f.log, f.now(), "re-discovering the filesystems failed; keeping the current ones", err, "reason", reason)
		}
		return false
	}
	f.discoverWarn.ok(f.log, "re-discovering the filesystems works again", "reason", reason)
	cur := f.current()
	changes := layoutChanges(cur, next)
	if len(changes) == 0 {
		f.holding = false
		f.log.Debug("filesystems unchanged", "reason", reason)
		return true
	}
	if runtimeAnswered(cur) && !runtimeAnswered(next) {
		// The runtime is restarting (or stopped): its config may already name a root it does
		// not use yet, and the kubelet, which asks the runtime, still sees the old one.
		if !f.holding {
			f.log.Info("the container runtime did not answer; keeping the filesystems until it does",
				"reason", reason, "changes", changes)
		}
		f.holding = true
		return false
	}
	f.holding = false
	if err := f.set(next); err != nil {
		f.discoverWarn.warn(f.log, f.now(), "re-discovering the filesystems failed; keeping the current ones", err, "reason", reason)
		return false
	}
	img := next.ByRole(monitor.RoleImageFs)
	attrs := []any{"reason", reason, "changes", changes, "runtime", next.Runtime, "dedicatedImageFs", next.DedicatedImageFs}
	if img != nil {
		attrs = append(attrs, "imagefs", img.Path, "imagefsMountpoint", img.Mountpoint)
	}
	f.log.Info("filesystems changed", attrs...)
	for _, w := range next.Warnings {
		f.log.Warn(w)
	}
	return true
}

// finishedMigrations returns the IDs of the data-root migrations in ops that are finished
// (done, rolled back or failed: the runtime may be on either root) and not yet in seen, and
// records them in seen.
func finishedMigrations(ops []*journal.Operation, seen map[string]string) []string {
	var out []string
	for _, op := range ops {
		if op.Kind != journal.KindMigrateDataRoot || op.State == journal.StateInProgress {
			continue
		}
		if seen[op.ID] == op.State {
			continue
		}
		_, known := seen[op.ID]
		seen[op.ID] = op.State
		switch op.State {
		case journal.StateDone, journal.StateRolledBack, journal.StateFailed:
			out = append(out, op.ID+" "+op.State)
		default:
			// "cleared" by an operator after failed: nothing moved since.
			if !known {
				out = append(out, op.ID+" "+op.State)
			}
		}
	}
	return out
}

// runtimeAnswered says whether imagefs was found by asking the runtime (its API or CRI),
// not from its config file or a default.
func runtimeAnswered(l *monitor.Layout) bool {
	if l == nil {
		return false
	}
	img := l.ByRole(monitor.RoleImageFs)
	return img != nil && (strings.HasPrefix(img.Source, monitor.SourceDockerAPI) || strings.HasPrefix(img.Source, monitor.SourceCRI))
}

// layoutChanges describes how next differs from cur in what the monitor evaluates: the
// runtime, each role's directory and filesystem, whether imagefs and containerfs are
// filesystems of their own, and the log directories. Sources and warnings do not count.
// Empty when the monitor need not change.
func layoutChanges(cur, next *monitor.Layout) []string {
	if cur == nil || next == nil {
		if cur == next {
			return nil
		}
		return []string{"filesystems discovered"}
	}
	var out []string
	if cur.Runtime != next.Runtime {
		out = append(out, fmt.Sprintf("runtime now %q (was %q)", next.Runtime, cur.Runtime))
	}
	for _, r := range []monitor.Role{monitor.RoleNodeFs, monitor.RoleImageFs, monitor.RoleContainerFs} {
		a, b := cur.ByRole(r), next.ByRole(r)
		if !sameFilesystem(a, b) {
			out = append(out, fmt.Sprintf("%s now %s (was %s)", r, describeFs(b), describeFs(a)))
		}
	}
	if cur.DedicatedImageFs != next.DedicatedImageFs {
		out = append(out, fmt.Sprintf("dedicatedImageFs now %t", next.DedicatedImageFs))
	}
	if cur.SplitContainerFs != next.SplitContainerFs {
		out = append(out, fmt.Sprintf("splitContainerFs now %t", next.SplitContainerFs))
	}
	a, b := logFilesystems(cur), logFilesystems(next)
	if !slices.EqualFunc(a, b, sameFilesystem) {
		out = append(out, fmt.Sprintf("log dirs now %s (was %s)", describeAll(b), describeAll(a)))
	}
	return out
}

// sameFilesystem compares what the monitor groups and samples by: the directory, its host
// path and device, and the mount it reports.
func sameFilesystem(a, b *monitor.Filesystem) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Path == b.Path && a.HostPath == b.HostPath && a.Dev == b.Dev && a.Mountpoint == b.Mountpoint &&
		a.Device == b.Device && a.SameAs == b.SameAs
}

func logFilesystems(l *monitor.Layout) []*monitor.Filesystem {
	var out []*monitor.Filesystem
	for i := range l.Filesystems {
		if l.Filesystems[i].Role == monitor.RoleLogs {
			out = append(out, &l.Filesystems[i])
		}
	}
	return out
}

// describeFs is "/data/docker on /data (/dev/sdb1)", with ", same as nodefs" when shared.
func describeFs(fs *monitor.Filesystem) string {
	if fs == nil {
		return "none"
	}
	s := fs.Path + " on " + fs.Mountpoint
	if fs.Device != "" {
		s += " (" + fs.Device + ")"
	}
	if fs.SameAs != "" {
		s += ", same as " + fs.SameAs
	}
	return s
}

func describeAll(fss []*monitor.Filesystem) string {
	var parts []string
	for _, fs := range fss {
		parts = append(parts, describeFs(fs))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}
