package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/config"
	"github.com/spf13/pflag"
)

func TestConfigCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := execute(t.Context(), []string{"config", "defaults"}, &out, &errb); code != exitOK {
		t.Fatalf("config defaults: exit %d: %s", code, errb.String())
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\nmonitor:\n  intervall: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"config", "validate", good}, exitOK, "valid"},
		{[]string{"config", "validate", bad}, exitUsage, bad + `:4: unknown key "intervall" (in monitor)`},
		{[]string{"config", "validate", filepath.Join(dir, "missing.yaml")}, exitUsage, "no such file"},
		{[]string{"config", "validate"}, exitUsage, "accepts 1 arg"},
	} {
		var o, e bytes.Buffer
		code := execute(t.Context(), tt.args, &o, &e)
		if code != tt.code || !strings.Contains(o.String()+e.String(), tt.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d and %q", tt.args, code, o.String()+e.String(), tt.code, tt.want)
		}
	}
}

// TestFlagsWinOverFile: a flag set on the command line beats the file, the file beats the
// flag's default.
func TestFlagsWinOverFile(t *testing.T) {
	o := &runOptions{}
	cmd := runCommand(&globalOptions{}, o)
	if err := cmd.Flags().Parse([]string{"--interval", "7s", "--log-dir", "/a", "--reclaim", "gc", "--gc-keep-exited", "0"}); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Monitor.Interval.Duration = 3 * time.Second
	c.Monitor.WarnHorizon.Duration = 2 * time.Hour
	c.Monitor.LogDirs = []string{"/b"}
	c.Metrics.Listen = "127.0.0.1:1"
	c.Monitor.Hysteresis.BreachHold.Duration = 0
	c.Logs.Budget = config.LogBudget{File: "/var/lib/evictguard/b.env", Margin: "1Gi"}
	c.Actions.Reclaim.Allow = []string{"ballast", "logs"}
	c.Actions.Reclaim.Horizon.Duration = time.Hour
	c.Actions.Reclaim.GC.KeepExited = 4
	c.Actions.Reclaim.Ballast.Size = "1Gi"
	c.Actions.Reclaim.RotatedLogs.PosFiles = []string{"/var/log/td.pos"}
	if err := applyConfig(o, c, cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	l := o.logs
	for _, tt := range []struct {
		name string
		ok   bool
		got  any
	}{
		{"--interval wins", o.cfg.Monitor.Interval.Duration == 7*time.Second, o.cfg.Monitor.Interval.Duration},
		{"--log-dir wins", slices.Equal(o.cfg.Monitor.LogDirs, []string{"/a"}), o.cfg.Monitor.LogDirs},
		{"--reclaim wins", slices.Equal(l.cfg.Actions.Reclaim.Allow, []string{"gc"}), l.cfg.Actions.Reclaim.Allow},
		{"--gc-keep-exited 0 wins", l.cfg.Actions.Reclaim.GC.KeepExited == 0, l.cfg.Actions.Reclaim.GC.KeepExited},
		{"file: warnHorizon", o.cfg.Monitor.WarnHorizon.Duration == 2*time.Hour, o.cfg.Monitor.WarnHorizon.Duration},
		{"file: listen", o.cfg.Metrics.Listen == "127.0.0.1:1", o.cfg.Metrics.Listen},
		{"file: breachHold 0s is no hold", o.evalConfig().BreachHold < 0, o.evalConfig().BreachHold},
		{"file: log budget", l.cfg.Logs.Budget.File == "/var/lib/evictguard/b.env" && l.cfg.Logs.Budget.Margin == "1Gi", l},
		{"file: reclaim horizon", l.cfg.Actions.Reclaim.Horizon.Duration == time.Hour, l.cfg.Actions.Reclaim.Horizon.Duration},
		{"file: ballast", l.cfg.Actions.Reclaim.Ballast.Size == "1Gi" && l.cfg.Actions.Reclaim.Ballast.Path == "/var/lib/evictguard/ballast", l},
		{"file: pos files", slices.Equal(l.cfg.Actions.Reclaim.RotatedLogs.PosFiles, []string{"/var/log/td.pos"}), l.cfg.Actions.Reclaim.RotatedLogs.PosFiles},
		{"file: rotated log age", l.cfg.Actions.Reclaim.RotatedLogs.MinAge.Duration == time.Hour, l.cfg.Actions.Reclaim.RotatedLogs.MinAge.Duration},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Errorf("got %+v", tt.got)
			}
		})
	}
}

func TestDiffConfig(t *testing.T) {
	withPolicy := func(c *config.Configuration) *config.Configuration {
		b, err := config.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := config.Load("c.yaml", b) // Present("policy") as in a file
		if err != nil {
			t.Fatal(err)
		}
		return c2
	}
	noPolicy := func(edit func(*config.Configuration)) *config.Configuration {
		c, err := config.Load("c.yaml", []byte("apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\n"))
		if err != nil {
			t.Fatal(err)
		}
		edit(c)
		return c
	}
	tests := []struct {
		name                string
		ladder, remediating bool
		flags               []string
		old, new            *config.Configuration
		live, restart       []string
	}{
		{
			name: "interval live, listen and log dirs need a restart",
			old:  noPolicy(func(*config.Configuration) {}),
			new: noPolicy(func(c *config.Configuration) {
				c.Monitor.Interval.Duration = 5 * time.Second
				c.Metrics.Listen = "127.0.0.1:2"
				c.Monitor.LogDirs = []string{"/var/log/x"}
			}),
			live: []string{"monitor.interval"}, restart: []string{"metrics.listen", "monitor.logDirs"},
		},
		{
			name:  "a key overridden by a flag is left out",
			flags: []string{"--listen", "x:1", "--log-dir", "/y"},
			old:   noPolicy(func(*config.Configuration) {}),
			new: noPolicy(func(c *config.Configuration) {
				c.Metrics.Listen = "127.0.0.1:2"
				c.Monitor.LogDirs = []string{"/var/log/x"}
			}),
		},
		{
			name: "evaluation and the alert feeds' horizons live",
			old:  noPolicy(func(*config.Configuration) {}),
			new: noPolicy(func(c *config.Configuration) {
				c.Monitor.WarnHorizon.Duration = 2 * time.Hour
				c.Monitor.WarnMargin = 0.1
				c.Monitor.Hysteresis.ExitBand = 0.5
				c.Alerts.CriticalHorizon.Duration = 20 * time.Minute
			}),
			live: []string{"alerts.criticalHorizon", "monitor.hysteresis.exitBand", "monitor.warnHorizon", "monitor.warnMargin"},
		},
		{
			name:   "reclaim policy live with a ladder, the ballast needs a restart",
			ladder: true,
			old:    noPolicy(func(*config.Configuration) {}),
			new: noPolicy(func(c *config.Configuration) {
				c.Actions.Reclaim.Allow = []string{"gc"}
				c.Actions.Reclaim.Horizon.Duration = time.Hour
				c.Actions.Reclaim.GC.KeepExited = 1
				c.Actions.Reclaim.Ballast.Size = "1Gi"
				c.Logs.Budget.Margin = "1Gi"
			}),
			live:    []string{"actions.reclaim.allow", "actions.reclaim.gc.keepExited", "actions.reclaim.horizon", "logs.budget.margin"},
			restart: []string{"actions.reclaim.ballast.size"},
		},
		{
			name: "reclaim policy without a ladder needs a restart",
			old:  noPolicy(func(*config.Configuration) {}),
			new: noPolicy(func(c *config.Configuration) {
				c.Actions.Reclaim.Allow = []string{"gc"}
				c.Logs.Budget.File = "/var/lib/evictguard/log-budget.env"
			}),
			live: []string{"logs.budget.file"}, restart: []string{"actions.reclaim.allow"},
		},
		{
			name:        "policy live while remediating from the file",
			remediating: true,
			old:         withPolicy(config.Default()),
			new: withPolicy(func() *config.Configuration {
				c := config.Default()
				c.Policy.MaxRestartsPerDay = 1
				c.Policy.DryRun = new(bool)
				return c
			}()),
			live: []string{"policy.dryRun", "policy.maxRestartsPerDay"},
		},
		{
			name:        "policy overridden by --policy",
			remediating: false,
			flags:       []string{"--policy", "/p.yaml"},
			old:         withPolicy(config.Default()),
			new: withPolicy(func() *config.Configuration {
				c := config.Default()
				c.Policy.MaxRestartsPerDay = 1
				return c
			}()),
		},
		{
			name: "a policy section added turns remediation on: restart",
			old:  noPolicy(func(*config.Configuration) {}),
			new: withPolicy(func() *config.Configuration {
				c := config.Default()
				c.Policy.MaxRestartsPerDay = 1
				return c
			}()),
			restart: []string{"policy"},
		},
		{
			name:        "a policy section removed: restart, nothing applied",
			remediating: true,
			old: withPolicy(func() *config.Configuration {
				c := config.Default()
				c.Policy.MaxRestartsPerDay = 1
				return c
			}()),
			new:     noPolicy(func(*config.Configuration) {}),
			restart: []string{"policy"},
		},
		{
			name:  "reclaim keys overridden by their flags",
			flags: []string{"--reclaim", "gc", "--reclaim-horizon", "1m"},
			old:   noPolicy(func(*config.Configuration) {}),
			new: noPolicy(func(c *config.Configuration) {
				c.Actions.Reclaim.Allow = []string{"logs"}
				c.Actions.Reclaim.Horizon.Duration = time.Hour
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRunCommand(&globalOptions{})
			if err := cmd.Flags().Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			d := &daemonControl{ladder: tt.ladder, remediating: tt.remediating}
			live, restart := diffConfig(tt.old, tt.new, cmd.Flags(), d.isLive)
			if !slices.Equal(live, tt.live) || !slices.Equal(restart, tt.restart) {
				t.Errorf("live %q restart %q\nwant live %q restart %q", live, restart, tt.live, tt.restart)
			}
		})
	}
}

// TestFlagDefaultsAreTheConfigDefaults: binding run's flags leaves the configuration they are
// bound to at config.Default(): no flag carries a default of its own.
func TestFlagDefaultsAreTheConfigDefaults(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	o := &runOptions{}
	cmd := runCommand(&globalOptions{}, o)
	if !reflect.DeepEqual(o.cfg, config.Default()) {
		t.Errorf("after binding the flags the configuration is\n%+v\nwant config.Default()\n%+v", o.cfg, config.Default())
	}
	keyed := 0
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		key := flagKey(f)
		if key == "" {
			return
		}
		keyed++
		t.Run(f.Name, func(t *testing.T) {
			if _, err := fieldAt(reflect.ValueOf(config.Default()).Elem(), key); err != nil {
				t.Errorf("--%s: %v", f.Name, err)
			}
		})
	})
	if keyed < 40 {
		t.Errorf("only %d of run's flags are bound to a file key", keyed)
	}
}
