package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
)

// crashAt runs a migration that SIGKILLs itself right after step (the journaled test hook).
func (m *dockerMigration) crashAt(t *testing.T, step, to string) {
	t.Helper()
	out, errOut, code := runEvictguardEnv(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=" + step}, m.args("--to", to, "--keep-old", "--retry")...)
	if code != -1 || !strings.Contains(errOut, "TEST HOOK: killing evictguard") {
		t.Fatalf("crash after %s: exit %d, want killed\n%s\n%s", step, code, out, errOut)
	}
}

func (m *dockerMigration) journalState(t *testing.T) []*journal.Operation {
	t.Helper()
	return journalOps(t, m.stateDir)
}

// removeBackups deletes the old roots kept by --keep-old next to root.
func removeBackups(t *testing.T, root string) {
	t.Helper()
	matches, _ := filepath.Glob(root + ".evictguard-backup-*")
	for _, p := range matches {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateCrashResume kills evictguard after every journaled step; `migrate --resume` must
// finish the move each time, with the runtime running on the new root and the data intact.
// The migrations alternate between the two filesystems.
func TestMigrateCrashResume(t *testing.T) {
	m := startDockerMigration(t, 96<<20, 96<<20)
	cur, other := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	digest, lines := dataDigestLines(t, cur)
	for _, step := range migration.Steps {
		m.crashAt(t, step, other)
		out, errOut, code := runEvictguardEnv(t, nil, m.args("--resume")...)
		if code != 0 {
			t.Fatalf("resume after %s: exit %d\n%s\n%s", step, code, out, errOut)
		}
		if got := m.dockerInfoRoot(t); got != other {
			t.Fatalf("after a crash at %s and resume: docker runs on %s, want %s", step, got, other)
		}
		assertSameData(t, other, digest, lines)
		m.checkDaemonJSON(t, other)
		ops := m.journalState(t)
		if last := ops[len(ops)-1]; last.State != journal.StateDone {
			t.Fatalf("after resume at %s the operation is %s", step, last.State)
		}
		removeBackups(t, cur)
		t.Logf("crash after %-13s → resume: ok (runtime on %s)", step, other)
		cur, other = other, cur
	}
	m.checkIntact(t, cur)
}

// TestMigrateCrashRollback kills evictguard after every journaled step; `migrate --rollback`
// must return the runtime to its old root, running, with the data and daemon.json as they
// were.
func TestMigrateCrashRollback(t *testing.T) {
	m := startDockerMigration(t, 96<<20, 96<<20)
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	digest, lines := dataDigestLines(t, from)
	cfg, err := os.ReadFile(m.docker.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range migration.Steps {
		m.crashAt(t, step, to)
		out, errOut, code := runEvictguardEnv(t, nil, m.args("--rollback")...)
		if code != 0 {
			t.Fatalf("rollback after %s: exit %d\n%s\n%s", step, code, out, errOut)
		}
		if got := m.dockerInfoRoot(t); got != from {
			t.Fatalf("after a crash at %s and rollback: docker runs on %s, want %s", step, got, from)
		}
		assertSameData(t, from, digest, lines)
		if now, _ := os.ReadFile(m.docker.ConfigPath); string(now) != string(cfg) {
			t.Fatalf("after rollback at %s daemon.json is\n%s\nwant\n%s", step, now, cfg)
		}
		ops := m.journalState(t)
		if last := ops[len(ops)-1]; last.State != journal.StateRolledBack {
			t.Fatalf("after rollback at %s the operation is %s", step, last.State)
		}
		// A copy the runtime ran on is kept for the operator; this test removes it.
		kept := "removed"
		if _, err := os.Stat(to); err == nil {
			kept = "kept"
			if err := os.RemoveAll(to); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("crash after %-13s → rollback: ok (copy %s)", step, kept)
	}
	m.checkIntact(t, from)
}

// TestMigrateResumeKeepsPlanOptions: `migrate --keep-old --checksums` killed in the pre-copy,
// then a bare `migrate --resume`: the options that change what the operation does are in its
// journaled plan, so the resumed verification compares contents and the old root is kept.
func TestMigrateResumeKeepsPlanOptions(t *testing.T) {
	m := startDockerMigration(t, 96<<20, 96<<20)
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	digest, lines := dataDigestLines(t, from)
	out, errOut, code := runEvictguardEnv(t, []string{"EVICTGUARD_TEST_CRASH_AFTER=" + migration.StepPrecopy},
		m.args("--to", to, "--keep-old", "--checksums")...)
	if code != -1 || !strings.Contains(errOut, "TEST HOOK: killing evictguard") {
		t.Fatalf("crash after precopy: exit %d, want killed\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = runEvictguardEnv(t, nil, m.args("--resume")...)
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	assertSameData(t, to, digest, lines)
	ops := m.journalState(t)
	op := ops[len(ops)-1]
	if op.State != journal.StateDone {
		t.Fatalf("operation %s is %s", op.ID, op.State)
	}
	var verify, preverify string
	for _, h := range op.History {
		switch h.Step {
		case migration.StepVerify:
			verify = h.Note
		case migration.StepPreverify:
			preverify = h.Note
		}
	}
	if !strings.Contains(verify, "checksums: true") {
		t.Errorf("the resumed verification did not compare contents: %q", verify)
	}
	t.Logf("preverify: %s\nverify: %s", preverify, verify)
	if backups, _ := filepath.Glob(from + ".evictguard-backup-*"); len(backups) != 1 {
		t.Errorf("old root not kept after resume (--keep-old was in the plan): %v", backups)
	}
	removeBackups(t, from)
}
