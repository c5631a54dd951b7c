package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/monitor"
)

// testLayout is nodefs on /dev/sda1 and imagefs at imagePath: on nodefs, or on /dev/sdb1
// (/data) when the path is under /data.
func testLayout(imagePath, source string) *monitor.Layout {
	nodefs := monitor.Filesystem{Role: monitor.RoleNodeFs, Path: "/var/lib/kubelet", HostPath: "/var/lib/kubelet",
		Mountpoint: "/", Device: "/dev/sda1", Dev: 1, Source: "kubelet --root-dir"}
	img := monitor.Filesystem{Role: monitor.RoleImageFs, Path: imagePath, HostPath: imagePath,
		Mountpoint: "/", Device: "/dev/sda1", Dev: 1, Source: source, SameAs: "nodefs"}
	dedicated := strings.HasPrefix(imagePath, "/data/")
	if dedicated {
		img.Mountpoint, img.Device, img.Dev, img.SameAs = "/data", "/dev/sdb1", 2, ""
	}
	cfs := img
	cfs.Role, cfs.SameAs = monitor.RoleContainerFs, "imagefs"
	return &monitor.Layout{Runtime: monitor.RuntimeDocker, DedicatedImageFs: dedicated,
		Filesystems: []monitor.Filesystem{nodefs, img, cfs}}
}

func TestLayoutChanges(t *testing.T) {
	const api = "docker API DockerRootDir"
	withLogs := func(l *monitor.Layout, dirs ...string) *monitor.Layout {
		for _, d := range dirs {
			l.Filesystems = append(l.Filesystems, monitor.Filesystem{Role: monitor.RoleLogs, Path: d, HostPath: d,
				Mountpoint: "/", Device: "/dev/sda1", Dev: 1, SameAs: "nodefs"})
		}
		return l
	}
	tests := []struct {
		name      string
		cur, next *monitor.Layout
		want      []string // substrings, one per change, in order
	}{
		{"same", testLayout("/var/lib/docker", api), testLayout("/var/lib/docker", api), nil},
		{"only the source differs", testLayout("/var/lib/docker", api), testLayout("/var/lib/docker", "/etc/docker/daemon.json data-root"), nil},
		{"warnings do not count", testLayout("/var/lib/docker", api), func() *monitor.Layout {
			l := testLayout("/var/lib/docker", api)
			l.Warnings = []string{"something"}
			return l
		}(), nil},
		{"moved to a dedicated filesystem", testLayout("/var/lib/docker", api), testLayout("/data/docker", api), []string{
			"imagefs now /data/docker on /data (/dev/sdb1) (was /var/lib/docker on / (/dev/sda1), same as nodefs)",
			"containerfs now /data/docker on /data (/dev/sdb1), same as imagefs",
			"dedicatedImageFs now true",
		}},
		{"moved back", testLayout("/data/docker", api), testLayout("/var/lib/docker", api), []string{
			"imagefs now /var/lib/docker on / (/dev/sda1), same as nodefs", "containerfs now", "dedicatedImageFs now false",
		}},
		{"moved on the same filesystem", testLayout("/var/lib/docker", api), testLayout("/srv/docker", api), []string{
			"imagefs now /srv/docker on /", "containerfs now /srv/docker",
		}},
		{"same path, another device (a new mount over the root)", testLayout("/var/lib/docker", api), func() *monitor.Layout {
			l := testLayout("/var/lib/docker", api)
			l.Filesystems[1].Dev, l.Filesystems[2].Dev = 7, 7
			return l
		}(), []string{"imagefs now /var/lib/docker", "containerfs now /var/lib/docker"}},
		{"runtime", testLayout("/var/lib/docker", api), func() *monitor.Layout {
			l := testLayout("/var/lib/docker", api)
			l.Runtime = monitor.RuntimeContainerd
			return l
		}(), []string{`runtime now "containerd" (was "docker")`}},
		{"split containerfs", testLayout("/data/docker", api), func() *monitor.Layout {
			l := testLayout("/data/docker", api)
			l.SplitContainerFs = true
			l.Filesystems[2].Path, l.Filesystems[2].HostPath, l.Filesystems[2].Dev = "/var/lib/containers", "/var/lib/containers", 1
			return l
		}(), []string{"containerfs now /var/lib/containers", "splitContainerFs now true"}},
		{"log dirs", withLogs(testLayout("/var/lib/docker", api), "/var/log/pods"), withLogs(testLayout("/var/lib/docker", api), "/var/log/pods", "/var/log/buffer"), []string{
			"log dirs now [/var/log/pods on / (/dev/sda1), same as nodefs; /var/log/buffer on / (/dev/sda1), same as nodefs] (was [/var/log/pods",
		}},
		{"nodefs", testLayout("/var/lib/docker", api), func() *monitor.Layout {
			l := testLayout("/var/lib/docker", api)
			l.Filesystems[0].Path, l.Filesystems[0].HostPath = "/srv/kubelet", "/srv/kubelet"
			return l
		}(), []string{"nodefs now /srv/kubelet"}},
		{"none before", nil, testLayout("/var/lib/docker", api), []string{"filesystems discovered"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := layoutChanges(tt.cur, tt.next)
			if len(got) != len(tt.want) {
				t.Fatalf("changes = %q, want %d like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("change %d = %q, want it to start with %q", i, got[i], w)
				}
			}
		})
	}
}

func TestRuntimeAnswered(t *testing.T) {
	tests := []struct {
		source string
		want   bool
	}{
		{"docker API DockerRootDir", true},
		{"CRI ImageFsInfo", true},
		{"CRI ImageFsInfo (does not exist yet)", true},
		{"/etc/docker/daemon.json data-root", false},
		{"default", false},
		{"no runtime: nodefs", false},
		{"fallback: nodefs", false},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			if got := runtimeAnswered(testLayout("/var/lib/docker", tt.source)); got != tt.want {
				t.Errorf("runtimeAnswered = %v, want %v", got, tt.want)
			}
		})
	}
	if runtimeAnswered(nil) {
		t.Error("runtimeAnswered(nil) = true")
	}
}

func TestFinishedMigrations(t *testing.T) {
	op := func(id, kind, state string) *journal.Operation {
		return &journal.Operation{ID: id, Kind: kind, State: state}
	}
	mig := journal.KindMigrateDataRoot
	tests := []struct {
		name string
		seen map[string]string
		ops  []*journal.Operation
		want []string
	}{
		{"empty journal", map[string]string{}, nil, nil},
		{"in progress is not finished", map[string]string{}, []*journal.Operation{op("m1", mig, journal.StateInProgress)}, nil},
		{"done", map[string]string{}, []*journal.Operation{op("m1", mig, journal.StateDone)}, []string{"m1 done"}},
		{"rolled back and failed count", map[string]string{}, []*journal.Operation{
			op("m1", mig, journal.StateRolledBack), op("m2", mig, journal.StateFailed)}, []string{"m1 rolled-back", "m2 failed"}},
		{"other kinds do not", map[string]string{}, []*journal.Operation{op("t1", journal.KindThresholdRewrite, journal.StateDone)}, nil},
		{"already seen", map[string]string{"m1": journal.StateDone}, []*journal.Operation{op("m1", mig, journal.StateDone)}, nil},
		{"failed, then resumed to done", map[string]string{"m1": journal.StateFailed}, []*journal.Operation{op("m1", mig, journal.StateDone)}, []string{"m1 done"}},
		{"failed, then cleared by an operator", map[string]string{"m1": journal.StateFailed}, []*journal.Operation{op("m1", mig, "cleared")}, nil},
		{"only the new one", map[string]string{"m1": journal.StateDone}, []*journal.Operation{
			op("m1", mig, journal.StateDone), op("m2", mig, journal.StateInProgress), op("m3", mig, journal.StateDone)}, []string{"m3 done"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := finishedMigrations(tt.ops, tt.seen)
			if !slices.Equal(got, tt.want) {
				t.Errorf("finishedMigrations = %q, want %q", got, tt.want)
			}
			for _, o := range tt.ops {
				if o.Kind == mig && o.State != journal.StateInProgress && tt.seen[o.ID] != o.State {
					t.Errorf("%s not recorded as seen: %v", o.ID, tt.seen)
				}
			}
			if again := finishedMigrations(tt.ops, tt.seen); len(again) != 0 {
				t.Errorf("reported twice: %q", again)
			}
		})
	}
}

// followRig is a layoutFollower over fakes: discovery returns next (or err), the journal is a
// real directory with the operations in ops, time is a fake clock.
type followRig struct {
	f      *layoutFollower
	now    time.Time
	next   *monitor.Layout
	err    error
	cur    *monitor.Layout
	sets   int
	finds  int
	ops    []*journal.Operation
	log    bytes.Buffer
	jdir   string
	stamps int
}

func newFollowRig(t *testing.T, interval time.Duration, cur *monitor.Layout) *followRig {
	t.Helper()
	r := &followRig{now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), cur: cur, next: cur, jdir: filepath.Join(t.TempDir(), "journal")}
	r.f = &layoutFollower{
		log: slog.New(slog.NewTextHandler(&r.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		discover: func(context.Context) (*monitor.Layout, error) {
			r.finds++
			return r.next, r.err
		},
		current:    func() *monitor.Layout { return r.cur },
		set:        func(l *monitor.Layout) error { r.sets++; r.cur = l; return nil },
		journal:    r,
		journalDir: r.jdir,
		poll:       time.Second,
		now:        func() time.Time { return r.now },
		seen:       map[string]string{},
	}
	r.f.setInterval(interval)
	r.f.lastDiscover = r.now
	return r
}

// List implements the journal.
func (r *followRig) List() ([]*journal.Operation, error) { return r.ops, nil }

// journal sets the operations and touches the directory, as an entry written does.
func (r *followRig) journal(t *testing.T, ops ...*journal.Operation) {
	t.Helper()
	r.ops = ops
	if err := os.MkdirAll(r.jdir, 0o700); err != nil {
		t.Fatal(err)
	}
	r.stamps++
	if err := os.Chtimes(r.jdir, time.Time{}, r.now.Add(time.Duration(r.stamps)*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
}

func (r *followRig) tick(d time.Duration) {
	r.now = r.now.Add(d)
	r.f.check(context.Background())
}

// TestFollowerPaths: the periodic path, the journal path, and that a layout is handed to
// the monitor only when it changed, once.
func TestFollowerPaths(t *testing.T) {
	const api = "docker API DockerRootDir"
	shared, dedicated := testLayout("/var/lib/docker", api), testLayout("/data/docker", api)
	done := &journal.Operation{ID: "m1", Kind: journal.KindMigrateDataRoot, State: journal.StateDone}

	t.Run("periodic", func(t *testing.T) {
		r := newFollowRig(t, time.Minute, shared)
		r.tick(30 * time.Second)
		if r.finds != 0 {
			t.Fatalf("discovered before the interval: %d", r.finds)
		}
		r.tick(30 * time.Second)
		if r.finds != 1 || r.sets != 0 {
			t.Fatalf("after 1m: %d discoveries, %d layouts set; want 1, 0 (unchanged)", r.finds, r.sets)
		}
		r.next = dedicated
		r.tick(time.Minute)
		r.tick(time.Minute)
		if r.finds != 3 || r.sets != 1 || r.cur != dedicated {
			t.Fatalf("%d discoveries, %d layouts set; want 3, 1", r.finds, r.sets)
		}
		if n := strings.Count(r.log.String(), `msg="filesystems changed"`); n != 1 {
			t.Errorf("logged the change %d times:\n%s", n, r.log.String())
		}
		for _, want := range []string{`reason=periodic`, "imagefs now /data/docker on /data", "dedicatedImageFs=true", "imagefsMountpoint=/data"} {
			if !strings.Contains(r.log.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, r.log.String())
			}
		}
	})

	t.Run("journal, periodic off", func(t *testing.T) {
		r := newFollowRig(t, 0, shared)
		r.journal(t, done)
		r.f.journalChanged() // the baseline at start: m1 was before the daemon
		r.next = dedicated
		r.tick(time.Hour)
		if r.finds != 0 {
			t.Fatalf("periodic discovery with interval 0, or a migration from before the start followed: %d", r.finds)
		}
		r.journal(t, done, &journal.Operation{ID: "m2", Kind: journal.KindMigrateDataRoot, State: journal.StateInProgress})
		r.tick(time.Second)
		if r.finds != 0 {
			t.Fatalf("followed a migration in progress: %d", r.finds)
		}
		r.journal(t, done, &journal.Operation{ID: "m2", Kind: journal.KindMigrateDataRoot, State: journal.StateDone})
		r.tick(time.Second)
		if r.finds != 1 || r.cur != dedicated {
			t.Fatalf("after m2 finished: %d discoveries, layout %v", r.finds, r.cur.DedicatedImageFs)
		}
		if !strings.Contains(r.log.String(), `reason="migration finished: m2 done"`) {
			t.Errorf("log:\n%s", r.log.String())
		}
		r.tick(time.Second)
		r.tick(time.Hour)
		if r.finds != 1 {
			t.Errorf("discovered again without a change in the journal: %d", r.finds)
		}
	})

	t.Run("runtime restarting", func(t *testing.T) {
		// The journal says done but dockerd does not answer yet: discovery falls back to its
		// config; keep the layout and retry each poll until the API answers.
		r := newFollowRig(t, 0, shared)
		r.next = testLayout("/data/docker", "/etc/docker/daemon.json data-root")
		r.journal(t, done)
		r.tick(time.Second)
		r.tick(time.Second)
		if r.sets != 0 || r.finds != 2 {
			t.Fatalf("%d layouts set after %d discoveries while the runtime did not answer; want 0 after 2", r.sets, r.finds)
		}
		r.next = dedicated
		r.tick(time.Second)
		r.tick(time.Second)
		if r.sets != 1 || r.cur != dedicated || r.finds != 3 {
			t.Fatalf("%d layouts set, %d discoveries; want 1 after 3", r.sets, r.finds)
		}
		if n := strings.Count(r.log.String(), "did not answer; keeping the filesystems"); n != 1 {
			t.Errorf("logged the hold %d times:\n%s", n, r.log.String())
		}
	})

	t.Run("errors are rate-limited and keep the layout", func(t *testing.T) {
		r := newFollowRig(t, time.Minute, shared)
		r.err = errors.New("nodefs: stat /var/lib/kubelet: input/output error")
		for range 12 {
			r.tick(time.Minute)
		}
		if r.sets != 0 || r.cur != shared {
			t.Fatalf("a failed discovery changed the layout")
		}
		if n := strings.Count(r.log.String(), "re-discovering the filesystems failed"); n != 2 {
			t.Errorf("warned %d times in 12 minutes, want 2 (every %v):\n%s", n, followWarnEvery, r.log.String())
		}
		r.err = nil
		r.tick(time.Minute)
		if !strings.Contains(r.log.String(), "re-discovering the filesystems works again") {
			t.Errorf("no recovery logged:\n%s", r.log.String())
		}
	})
}

// parsedRun is `run` with args parsed into its options.
func parsedRun(t *testing.T, args []string) (*runOptions, *cobra.Command) {
	t.Helper()
	o := &runOptions{}
	cmd := runCommand(&globalOptions{}, o)
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return o, cmd
}

// reloadConfig is a reload from old to next of the daemon whose options are o (parsed by
// cmd): it returns the keys applied live and apply's error. No key may need a restart.
func reloadConfig(t *testing.T, o *runOptions, cmd *cobra.Command, old, next *config.Configuration) ([]string, error) {
	t.Helper()
	d := &daemonControl{o: o, fs: cmd.Flags(), log: slog.New(slog.DiscardHandler)}
	live, restart := diffConfig(old, next, cmd.Flags(), d.isLive)
	if len(restart) != 0 {
		t.Fatalf("needRestart %q, want none", restart)
	}
	n := *o
	if err := applyConfig(&n, next, cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	return live, d.apply(live, &n, tick, nil)
}

// TestFollowOptionsFromConfig: the file's monitor.rediscoverInterval is used unless the
// flag is set on the command line; no file keeps the flag's default.
func TestFollowOptionsFromConfig(t *testing.T) {
	c := config.Default()
	c.Monitor.RediscoverInterval.Duration = 0
	tests := []struct {
		name string
		args []string
		cfg  *config.Configuration
		want time.Duration
	}{
		{"default", nil, nil, time.Minute},
		{"file", nil, c, 0},
		{"flag wins", []string{"--rediscover-interval", "30s"}, c, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, cmd := parsedRun(t, tt.args)
			if tt.cfg != nil {
				if err := applyConfig(o, tt.cfg, cmd.Flags()); err != nil {
					t.Fatal(err)
				}
			}
			if o.follow.cfg.Monitor.RediscoverInterval.Duration != tt.want {
				t.Errorf("interval = %v, want %v", o.follow.cfg.Monitor.RediscoverInterval.Duration, tt.want)
			}
		})
	}
}

// TestRediscoverIntervalReload: a reload hands a changed monitor.rediscoverInterval to the
// running follower — unless the flag set it — and refuses a negative one.
func TestRediscoverIntervalReload(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		to          time.Duration
		wantLive    bool
		wantErr     bool
		wantRunning time.Duration
	}{
		{name: "changed", to: 5 * time.Minute, wantLive: true, wantRunning: 5 * time.Minute},
		{name: "turned off", to: 0, wantLive: true, wantRunning: 0},
		{name: "negative", to: -time.Second, wantLive: true, wantErr: true, wantRunning: time.Minute},
		{name: "flag wins", args: []string{"--rediscover-interval", "1m"}, to: 5 * time.Minute, wantRunning: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, cmd := parsedRun(t, tt.args)
			old, next := config.Default(), config.Default()
			next.Monitor.RediscoverInterval.Duration = tt.to
			if err := applyConfig(o, old, cmd.Flags()); err != nil {
				t.Fatal(err)
			}
			r := newFollowRig(t, o.follow.cfg.Monitor.RediscoverInterval.Duration, nil)
			o.follow.running = r.f
			live, err := reloadConfig(t, o, cmd, old, next)
			if slices.Contains(live, "monitor.rediscoverInterval") != tt.wantLive {
				t.Fatalf("live %q; want live: %t", live, tt.wantLive)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("apply: %v, want an error: %t", err, tt.wantErr)
			}
			if got := time.Duration(r.f.interval.Load()); got != tt.wantRunning {
				t.Errorf("the follower's interval is %v, want %v", got, tt.wantRunning)
			}
		})
	}
}

// TestLogDirsReload: a reload hands changed monitor.logDirs to the follower, which discovers
// again with them at its next poll — unless --log-dir set them on the command line.
func TestLogDirsReload(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantLive bool
		wantDirs []string
	}{
		{name: "changed", wantLive: true, wantDirs: []string{"/var/log/fluentd-buffers", "/var/log/flb-storage"}},
		{name: "flag wins", args: []string{"--log-dir", "/var/log/fluentd-buffers"}, wantDirs: []string{"/var/log/fluentd-buffers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, cmd := parsedRun(t, tt.args)
			old, next := config.Default(), config.Default()
			old.Monitor.LogDirs = []string{"/var/log/fluentd-buffers"}
			next.Monitor.LogDirs = []string{"/var/log/fluentd-buffers", "/var/log/flb-storage"}
			if err := applyConfig(o, old, cmd.Flags()); err != nil {
				t.Fatal(err)
			}
			r := newFollowRig(t, 0, testLayout("/var/lib/docker", monitor.SourceDockerAPI))
			opts := &monitor.DiscoverOptions{ExtraLogDirs: o.cfg.Monitor.LogDirs}
			var used []string
			find := r.f.discover
			r.f.opts = opts
			r.f.discover = func(ctx context.Context) (*monitor.Layout, error) {
				used = slices.Clone(opts.ExtraLogDirs)
				return find(ctx)
			}
			o.follow.running = r.f
			live, err := reloadConfig(t, o, cmd, old, next)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(live, "monitor.logDirs") != tt.wantLive {
				t.Fatalf("live %q; want live: %t", live, tt.wantLive)
			}
			r.f.check(t.Context())
			if !tt.wantLive {
				if r.finds != 0 {
					t.Errorf("discovered %d times, want none", r.finds)
				}
				return
			}
			if r.finds != 1 || !slices.Equal(used, tt.wantDirs) {
				t.Errorf("discovered %d times with log dirs %q, want once with %q", r.finds, used, tt.wantDirs)
			}
			if !strings.Contains(r.log.String(), "configuration reloaded") {
				t.Errorf("reason not logged:\n%s", r.log.String())
			}
		})
	}
}
