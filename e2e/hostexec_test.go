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
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
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
func waitOp(t *testing.T, stateDir, step string, timeout time.Duration, diag ...func() string) *journal.Operation {
	t.Helper()
	var op *journal.Operation
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
		if op.State != journal.StateInProgress {
			return nil
		}
		return fmt.Errorf("operation %s after step %q", op.ID, op.Step)
	})
	if err != nil {
		for _, d := range diag {
			t.Log(d())
		}
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
	cmd.Env = append(os.Environ(), "EVICTGUARD_TEST_HOLD_AFTER="+migration.StepStop+"="+hold)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	op := waitOp(t, m.stateDir, migration.StepStop, 2*time.Minute)
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
		if ops[0].State == journal.StateInProgress {
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
	if len(ops) != 1 || ops[0].State != journal.StateDone {
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

// TestMigrateFromDockerContainer is the incident of a one-shot remediation container: the
// project's image, run by the Docker it migrates (no live-restore, the node's / at /host, the
// manager's bus mounted, a restart policy), moves that Docker's data root. Stopping Docker
// kills the container; the operation goes on in its unit on the host; Docker, started on the
// new root, restarts the container, which adopts the running operation (or finds it done),
// reports it and exits 0 — one operation, nothing started twice.
func TestMigrateFromDockerContainer(t *testing.T) {
	t.Parallel()
	m := startDockerMigration(t, 128<<20, 192<<20)
	from, to := filepath.Join(m.a, "docker"), filepath.Join(m.b, "docker")
	ref := imageRef(t)
	m.docker.CLI(t, "load", "-i", evictguardImage(t))
	bus := strings.TrimPrefix(m.sd.BusAddress, "unix:path=")
	args := []string{"create", "--name", "eg-migrate", "--restart", "on-failure", "--pid", "host", "--network", "none",
		"-v", "/:/host:ro", "-v", m.stateDir + ":/host" + m.stateDir, "-v", bus + ":/host" + bus, ref,
		"migrate", "--runtime", "docker", "--to", to, "--yes", "--host-root", "/host",
		"--bus-address", "unix:path=/host" + bus, "--docker-socket", "/host" + m.docker.Socket,
		"--docker-config", m.docker.ConfigPath, "--runtime-units", "docker.service", "--state-dir", m.stateDir}
	m.docker.CLI(t, args...)
	before, beforeLines := dataDigestLines(t, from)
	start := time.Now()
	m.docker.CLI(t, "start", "eg-migrate")

	// The container's first run is killed with dockerd; its next run reports the outcome.
	var state string
	err := harness.WaitFor(t.Context(), 3*time.Minute, nil, func() error {
		out, err := m.docker.TryCLI("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}", "eg-migrate")
		if err != nil {
			return err // dockerd is down
		}
		state = strings.TrimSpace(out)
		if !strings.HasPrefix(state, "exited ") {
			return fmt.Errorf("container: %s", state)
		}
		// dockerd restores the restart policy's count at start: the runs are in the log.
		logs, err := m.docker.TryCLI("logs", "eg-migrate")
		if err != nil || !strings.Contains(logs, "stopped following operation") {
			return fmt.Errorf("container %s, its first run not ended by dockerd's stop: %w", state, err)
		}
		return nil
	})
	logs, _ := m.docker.TryCLI("logs", "eg-migrate")
	if err != nil {
		t.Fatalf("%v\ncontainer logs:\n%s", err, logs)
	}
	if !strings.HasPrefix(state, "exited 0 ") {
		t.Errorf("the container ended %q, want exit 0 after a restart", state)
	}
	t.Logf("container %s after %s", state, time.Since(start).Round(100*time.Millisecond))
	ops := journalOps(t, m.stateDir)
	if len(ops) != 1 || ops[0].State != journal.StateDone {
		t.Fatalf("journal: %d operations (want 1, done): %+v\ncontainer logs:\n%s", len(ops), ops, logs)
	}
	op := ops[0]
	if !strings.Contains(logs, "Migrated (operation "+op.ID) && !strings.Contains(logs, "Resumed and finished (operation "+op.ID) &&
		!strings.Contains(logs, "Already migrated (operation "+op.ID) {
		t.Errorf("the restarted container did not report operation %s:\n%s", op.ID, logs)
	}
	m.checkDaemonJSON(t, to)
	// The one change: the mount point dockerd made for /host in the container's own layer
	// when it started it.
	cid := strings.TrimSpace(m.docker.CLI(t, "inspect", "-f", "{{.Id}}", "eg-migrate"))
	mountID, err := os.ReadFile(filepath.Join(to, "image", "vfs", "layerdb", "mounts", cid, "mount-id"))
	if err != nil {
		t.Fatal(err)
	}
	assertSameData(t, to, before, beforeLines, "vfs/dir/"+strings.TrimSpace(string(mountID))+"/host")
	if got := m.dockerInfoRoot(t); got != to {
		t.Errorf("docker info: root %s, want %s", got, to)
	}
	if _, err := os.Stat(from); !os.IsNotExist(err) {
		t.Errorf("old root %s still exists", from)
	}
	if s := unitLoadState(t, m.sd.Conn(t), hostexec.UnitName(op.ID)); s != "not-found" {
		t.Errorf("the operation's unit: LoadState %s", s)
	}
	var stopped, started time.Time
	for _, h := range op.History {
		t.Logf("  %-13s %s  %s", h.Step, h.At.Format("15:04:05.000"), h.Note)
		switch h.Step {
		case migration.StepPreverify:
			stopped = h.At // the stop step begins
		case migration.StepStartRuntime:
			started = h.At
		}
	}
	t.Logf("docker was down for at most %s (end of preverify to start-runtime); container logs:\n%s", started.Sub(stopped).Round(time.Millisecond), logs)
}
