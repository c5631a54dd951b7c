package main

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/lease"
	"github.com/evictguard/evictguard/migration"
)

func TestResolveExecute(t *testing.T) {
	node := hostexec.View{Root: "/"}
	pod := hostexec.View{Root: "/host"}
	fixture := hostexec.View{Root: "/tmp/fixture", Bus: "unix:path=/tmp/sd/bus"}
	tests := []struct {
		mode    string
		view    hostexec.View
		want    string
		wantErr string
	}{
		{"auto", node, execHere, ""},
		{"", pod, execHost, ""},
		{"auto", fixture, execHere, ""},
		{"here", node, execHere, ""},
		{"here", pod, "", "inside a container"},
		{"host", node, execHost, ""},
		{"elsewhere", node, "", "want auto, here or host"},
	}
	for _, tc := range tests {
		t.Run(tc.mode+" "+string(tc.view.Root), func(t *testing.T) {
			got, err := resolveExecute(tc.mode, tc.view)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%q %v, want %q", got, err, tc.want)
			}
		})
	}
}

// TestUnitArgs: from a pod, the unit's command names node paths and the node's bus, and
// carries every option the journaled plan does not.
func TestUnitArgs(t *testing.T) {
	g := &globalOptions{hostRoot: "/host", logLevel: "debug", stderr: io.Discard, logger: slog.New(slog.DiscardHandler)}
	x := &migrationRunner{g: g, mode: execHost, stateDir: "/var/lib/evictguard"}
	mo := migration.Options{DockerSocket: "/host/var/run/docker.sock", DockerConfig: "/etc/docker/daemon.json",
		KubeletHealthz: "http://127.0.0.1:10248/healthz", StableFor: 5 * time.Second, Checksums: true, NodeName: "node-1",
		Lock: &lease.Lock{Namespace: "evictguard", Name: "evictguard-restart", Slots: 1, TTL: 10 * time.Minute}}
	got := x.unitArgs(mo, "op-1", actionResume, nil)
	want := []string{"migrate", "--resume", "--op", "op-1", "--execute", "here", "--host-root", "/", "--state-dir", "/var/lib/evictguard",
		"--log-level", "debug", "--bus-address", "unix:path=/run/dbus/system_bus_socket", "--docker-socket", "/var/run/docker.sock",
		"--docker-config", "/etc/docker/daemon.json", "--healthz", "http://127.0.0.1:10248/healthz", "--stable-for", "5s",
		"--checksums", "--node-name", "node-1"}
	if !slices.Equal(got, want) {
		t.Errorf("unit args\n got %q\nwant %q", got, want)
	}
	// With lent credentials, the unit takes the Lease with them.
	got = x.unitArgs(mo, "op-1", actionRollback, &hostexec.Credentials{Kubeconfig: "/var/lib/evictguard/ops/op-1/kubeconfig"})
	if got[1] != "--rollback" || !slices.Contains(got, "--kubeconfig") || !slices.Contains(got, "--lock-slots") {
		t.Errorf("unit args with credentials: %q", got)
	}
}

func TestHistoryAfter(t *testing.T) {
	h := []journal.StepRecord{{Step: "begin"}, {Step: "lease"}, {Step: "cordon"}, {Step: "drain"}}
	steps := func(rs []journal.StepRecord) (out []string) {
		for _, r := range rs {
			out = append(out, r.Step)
		}
		return out
	}
	if got := steps(historyAfter(h, "")); !slices.Equal(got, []string{"lease", "cordon", "drain"}) {
		t.Errorf("after nothing: %v", got)
	}
	if got := steps(historyAfter(h, "cordon")); !slices.Equal(got, []string{"drain"}) {
		t.Errorf("after cordon: %v", got)
	}
	if got := historyAfter(h, "drain"); len(got) != 0 {
		t.Errorf("after the last: %v", got)
	}
}
