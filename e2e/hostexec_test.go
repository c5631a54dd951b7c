package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/hostexec"
	"github.com/evictguard/evictguard/remediate"
)

// unitLoadState is the LoadState of a unit of the sandboxed manager ("not-found" once a
// transient unit is collected).
func unitLoadState(t *testing.T, conn *sddbus.Conn, name string) string {
	t.Helper()
	p, err := conn.GetUnitPropertyContext(t.Context(), name, "LoadState")
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return strings.Trim(p.Value.String(), `"`)
}

// waitOp waits until the state dir's journal holds one operation that passed step (or ended).
func waitOp(t *testing.T, stateDir, step string, timeout time.Duration) *remediate.Operation {
	t.Helper()
	var op *remediate.Operation
	err := harness.WaitFor(t.Context(), timeout, nil, func() error {
		ops := journalOps(t, stateDir)
		if len(ops) == 0 {
			return errors.New("no operation in the journal")
		}
		op = ops[len(ops)-1]
		for _, h := range op.History {
			if h.Step == step {
				return nil
			}
		}
		if op.State != remediate.StateInProgress {
			return nil
		}
		return fmt.Errorf("operation %s after step %q", op.ID, op.Step)
	})
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// TestMigrateOnHostUnit: `evictguard migrate --execute host` runs the migration as the
// operation's transient unit (a staged copy of the binary, started over D-Bus) and follows
// it. SIGTERM to the follower in the stopped window does not abandon the operation: the unit
// finishes it, and is collected. Run again with the same --to, the command reports the done
// operation and starts nothing.
func TestMigrateOnHostUnit(t *testing.T) {
	t.Parallel()
	m := startDockerMigration(t, 96<<20, 160<<20)
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	before, beforeLines := dataDigestLines(t, from)
	hold := filepath.Join(harness.TempDir(t, "hold"), "release")

	cmd := exec.Command(evictguardBinary(t), m.args("--to", to, "--execute", "host")...)
	cmd.Env = append(os.Environ(), "EVICTGUARD_TEST_HOLD_AFTER="+remediate.MigStepStop+"="+hold)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	op := waitOp(t, m.stateDir, remediate.MigStepStop, 2*time.Minute)
	unit := hostexec.UnitName(op.ID)
	conn := m.sd.Conn(t)
	if s := unitLoadState(t, conn, unit); s != "loaded" {
		t.Fatalf("%s: LoadState %s while the operation runs", unit, s)
	}
	// The follower is signalled while docker is stopped: it stops following, the unit goes on.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "goes on on the host as "+unit) {
		t.Fatalf("the signalled follower: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(t.Context(), 2*time.Minute, nil, func() error {
		ops := journalOps(t, m.stateDir)
		if ops[0].State == remediate.StateInProgress {
			return fmt.Errorf("operation after step %s", ops[0].Step)
		}
		if s := unitLoadState(t, conn, unit); s != "not-found" {
			return fmt.Errorf("%s: LoadState %s", unit, s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ops := journalOps(t, m.stateDir)
	if len(ops) != 1 || ops[0].State != remediate.StateDone {
		t.Fatalf("journal: %d operations, the first %s after %s", len(ops), ops[0].State, ops[0].Step)
	}
	m.checkDaemonJSON(t, to)
	assertSameData(t, to, before, beforeLines)
	m.checkIntact(t, to)
	bins, _ := filepath.Glob(filepath.Join(m.stateDir, "bin", "evictguard-*"))
	if len(bins) != 1 {
		t.Errorf("staged binaries: %v", bins)
	}
	out, _ := os.ReadFile(filepath.Join(m.stateDir, "ops", op.ID, "output.log"))
	if !strings.Contains(string(out), "Resumed and finished") {
		t.Errorf("the unit's output:\n%s", out)
	}

	// Again, as a restart policy would: the done operation is reported, nothing starts.
	o, e, code := runEvictguardEnv(t, nil, m.args("--to", to, "--execute", "host")...)
	if code != 0 || !strings.Contains(o, "Already migrated (operation "+op.ID) {
		t.Errorf("second run: exit %d\n%s\n%s", code, o, e)
	}
	if ops := journalOps(t, m.stateDir); len(ops) != 1 {
		t.Errorf("the second run journaled %d operations", len(ops))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	units, err := conn.ListUnitsByPatternsContext(ctx, nil, []string{hostexec.UnitPrefix + "*"})
	if err != nil || len(units) != 0 {
		t.Errorf("operation units left: %v %v", units, err)
	}
}
