package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixtureRoot is a host root with a kubelet root dir and a daemon.json, on whatever
// filesystem the test's temp dir is.
func fixtureRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/kubelet", "var/lib/docker/containers", "var/log/pods", "etc/docker"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte(`{"data-root":"/var/lib/docker"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestStatusJSONContract(t *testing.T) {
	root := fixtureRoot(t)
	tests := []struct {
		name     string
		hard     string
		wantCode int
		wantSig  string
		wantSt   string
	}{
		{name: "ok", hard: "nodefs.available<1%", wantCode: exitOK, wantSig: "nodefs.available", wantSt: "ok"},
		// 99% of capacity is never free on the test machine's disk
		{name: "breached", hard: "nodefs.available<99%", wantCode: exitProblem, wantSig: "nodefs.available", wantSt: "breached"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := execute(context.Background(), []string{
				"--host-root", root, "-o", "json", "status", "--docker-socket", filepath.Join(root, "none.sock"),
				"--kubelet-version", "1.35", "--kubelet-cmdline", "--root-dir=/var/lib/kubelet --eviction-hard=" + tc.hard,
			}, &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, errb.String())
			}
			var doc map[string]any
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out.String())
			}
			fss, _ := doc["filesystems"].([]any)
			sigs, _ := doc["signals"].([]any)
			if len(fss) == 0 || len(sigs) == 0 {
				t.Fatalf("no filesystems or signals: %s", out.String())
			}
			for _, k := range []string{"role", "path", "mountpoint", "device", "capacityBytes", "availableBytes", "inodes", "inodesFree"} {
				if _, ok := fss[0].(map[string]any)[k]; !ok {
					t.Errorf("filesystem lacks %q", k)
				}
			}
			fs0 := fss[0].(map[string]any)
			if fs0["role"] != "nodefs" || fs0["path"] != "/var/lib/kubelet" {
				t.Errorf("first filesystem %v, want nodefs /var/lib/kubelet (a node path)", fs0)
			}
			found := false
			for _, s := range sigs {
				m := s.(map[string]any)
				for _, k := range []string{"signal", "kind", "threshold", "thresholdQuantity", "observed", "headroom", "state", "secondsToThreshold"} {
					if _, ok := m[k]; !ok {
						t.Errorf("signal %v lacks %q", m["signal"], k)
					}
				}
				if m["signal"] == tc.wantSig {
					found = true
					if m["state"] != tc.wantSt || m["kind"] != "hard" {
						t.Errorf("%s: %v", tc.wantSig, m)
					}
				}
			}
			if !found {
				t.Errorf("no %s in %s", tc.wantSig, out.String())
			}
		})
	}
}

func TestStatusTableNoKubelet(t *testing.T) {
	root := t.TempDir()
	var out, errb bytes.Buffer
	code := execute(context.Background(), []string{"--host-root", root, "status", "--docker-socket", filepath.Join(root, "none")}, &out, &errb)
	if code != exitOK && code != exitProblem {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"no kubelet found", "nodefs: /", "SIGNAL", "nodefs.available", "imagefs.available"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestStatusUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"status", "--runtime", "rkt"},
		{"status", "--interval", "0s", "--watch"},
		{"status", "--warn-margin", "2"},
		{"run", "--interval", "-1s"},
	} {
		var out, errb bytes.Buffer
		if code := execute(context.Background(), append([]string{"--host-root", t.TempDir()}, args...), &out, &errb); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, errb.String())
		}
	}
}

// TestRunLogsStateChanges runs the daemon briefly and checks it logs each signal's state.
func TestRunLogsStateChanges(t *testing.T) {
	root := fixtureRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var out, errb bytes.Buffer
	code := execute(ctx, []string{"--host-root", root, "run", "--interval", "200ms", "--docker-socket", filepath.Join(root, "none"),
		"--kubelet-version", "1.35", "--kubelet-cmdline", "--root-dir=/var/lib/kubelet --eviction-hard=nodefs.available<99%,imagefs.available<1%"}, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	log := errb.String()
	for _, want := range []string{`msg="signal state changed" signal=nodefs.available kind=hard from="" to=breached`, `signal=imagefs.available kind=hard from="" to=ok`, "msg=stopping"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, `msg="signal state changed" signal=nodefs.available`); n != 1 {
		t.Errorf("nodefs.available logged %d times, want once (no flapping):\n%s", n, log)
	}
}
