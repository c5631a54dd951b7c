package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
)

// TestMigrateDocker moves a real dockerd's data root (legacy "graph" in daemon.json, as in
// the incident in README.md) from one tmpfs to another with `evictguard migrate`, and checks that images,
// the stopped container with its writable-layer change and logs, and the named volume all
// survive, that docker info reports the new root and that daemon.json kept its other keys.
func TestMigrateDocker(t *testing.T) {
	m := startDockerMigration(t, 96<<20, 160<<20)
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	before, beforeLines := dataDigestLines(t, from)
	out, errOut, code := runEvictguardEnv(t, nil, m.args("--to", to, "--dry-run")...)
	if code != 0 || !strings.Contains(out, "Downtime") || !strings.Contains(out, "graph (legacy)") {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Stat(to); !os.IsNotExist(err) {
		t.Fatalf("the dry run created %s", to)
	}
	t.Logf("plan:\n%s", out)

	out, errOut, code = runEvictguardEnv(t, nil, m.args("--to", to, "--checksums")...)
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("migrate:\n%s", out)
	m.checkDaemonJSON(t, to)
	assertSameData(t, to, before, beforeLines)
	if _, err := os.Stat(from); !os.IsNotExist(err) {
		t.Errorf("old root %s still exists (policy: remove)", from)
	}
	m.checkIntact(t, to)

	// The journal says done, with every step.
	j, err := journal.Open("/", m.stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops, _ := j.List()
	if len(ops) != 1 || ops[0].State != journal.StateDone || ops[0].Step != migration.StepRelease {
		t.Fatalf("journal: %+v", ops)
	}
	for _, h := range ops[0].History {
		t.Logf("  %-14s %s", h.Step, h.Note)
	}
}

// TestMigrateRefusals: every refusal exits 2 with a message, and changes nothing.
func TestMigrateRefusals(t *testing.T) {
	m := startDockerMigration(t, 64<<20, 64<<20)
	from := filepath.Join(m.a, "docker")
	small := harness.TmpFS(t, 4<<20, 1000)
	before := dataDigest(t, from)
	cfgBefore, _ := os.ReadFile(m.docker.ConfigPath)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"too small", m.args("--to", filepath.Join(small, "docker")), "available"},
		{"same filesystem", m.args("--to", filepath.Join(m.a, "elsewhere")), "same filesystem"},
		{"inside the root", m.args("--to", filepath.Join(from, "sub")), "inside the current data root"},
		{"root inside the target", m.args("--to", m.a), "is inside --to"},
		{"unknown runtime", []string{"migrate", "--runtime", "podman", "--to", filepath.Join(m.b, "x"), "--state-dir", m.stateDir, "--yes"}, "unknown runtime"},
		{"relative target", m.args("--to", "data/docker"), "absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runEvictguardEnv(t, nil, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "nothing changed") {
				t.Errorf("exit %d, want 2 with %q and \"nothing changed\"\nstdout:\n%s\nstderr:\n%s", code, tc.want, out, errOut)
			}
		})
	}
	if got := m.dockerInfoRoot(t); got != from {
		t.Errorf("docker moved to %s", got)
	}
	if after := dataDigest(t, from); after != before {
		t.Error("the data root changed")
	}
	if cfg, _ := os.ReadFile(m.docker.ConfigPath); string(cfg) != string(cfgBefore) {
		t.Error("daemon.json changed")
	}
	for _, p := range []string{filepath.Join(small, "docker"), filepath.Join(m.a, "elsewhere"), filepath.Join(m.b, "x"), filepath.Join(m.stateDir, "journal")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s was created", p)
		}
	}
	if ents, _ := os.ReadDir(m.b); len(ents) != 0 {
		t.Errorf("the target filesystem is not empty: %v", ents)
	}
}
