package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/internal/config"
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
	cmd := newRunCommand(&globalOptions{})
	if err := cmd.Flags().Parse([]string{"--interval", "7s", "--log-dir", "/a"}); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Monitor.Interval.Duration = 3 * time.Second
	c.Monitor.WarnHorizon.Duration = 2 * time.Hour
	c.Monitor.LogDirs = []string{"/b"}
	c.Metrics.Listen = "127.0.0.1:1"
	// o as the command line left it (the command binds its own runOptions).
	o := &runOptions{}
	o.interval, _ = cmd.Flags().GetDuration("interval")
	o.logDirs, _ = cmd.Flags().GetStringArray("log-dir")
	applyConfig(o, c, cmd.Flags())
	if o.interval != 7*time.Second || !slices.Equal(o.logDirs, []string{"/a"}) {
		t.Errorf("flags lost: interval %v logDirs %v", o.interval, o.logDirs)
	}
	if o.warnHorizon != 2*time.Hour || o.listen != "127.0.0.1:1" {
		t.Errorf("file lost: warnHorizon %v listen %q", o.warnHorizon, o.listen)
	}
}

func TestDiffConfig(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.Monitor.Interval.Duration = 5 * time.Second
	b.Metrics.Listen = "127.0.0.1:2"
	b.Monitor.LogDirs = []string{"/var/log/x"}
	live, restart := diffConfig(a, b, nil)
	if !slices.Equal(live, []string{"monitor.interval"}) || !slices.Equal(restart, []string{"metrics.listen", "monitor.logDirs"}) {
		t.Errorf("live %v restart %v", live, restart)
	}
	cmd := newRunCommand(&globalOptions{})
	if err := cmd.Flags().Parse([]string{"--listen", "x:1"}); err != nil {
		t.Fatal(err)
	}
	if _, restart := diffConfig(a, b, cmd.Flags()); slices.Contains(restart, "metrics.listen") {
		t.Errorf("a key overridden by a flag is reported: %v", restart)
	}
}
