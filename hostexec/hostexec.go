package hostexec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/evictguard/evictguard/internal/atomicfile"
	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/sdbus"
)

// UnitPrefix starts the name of every operation's unit.
const UnitPrefix = "evictguard-op-"

// UnitName is the transient unit that runs operation opID.
func UnitName(opID string) string { return UnitPrefix + opID + ".service" }

// Host starts and follows operations' units on one node.
type Host struct {
	// Root is where the node's "/" is visible ("/host" in the DaemonSet).
	Root hostfs.Root
	// Bus is the manager's D-Bus address as this process dials it ("" for the default).
	Bus string
	// StateDir is evictguard's state directory (a node path).
	StateDir string
	Systemd  *sdbus.Client
	Log      *slog.Logger
	// Executable is the binary to stage (default: the running one, /proc/self/exe).
	Executable string
}

func (h *Host) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// managerPath is where the systemd manager (and the unit's process) finds the node path p:
// the node's own path, or, when this process works on a fixture tree on the node rather than
// from a container, that path under the tree.
func (h *Host) managerPath(p string) string {
	return View{Root: h.Root, Bus: h.Bus}.UnitRoot().Path(p)
}

// OpDir is the node path of operation opID's directory (output, lent credentials).
func (h *Host) OpDir(opID string) string { return filepath.Join(h.StateDir, "ops", opID) }

// Output is the node path of the file the unit of opID prints to.
func (h *Host) Output(opID string) string { return filepath.Join(h.OpDir(opID), "output.log") }

// Stage places a copy of the running binary at <state dir>/bin/evictguard-<digest> and returns
// its node path. An existing copy is reused only if its content has the same digest; any other
// file there is replaced (atomically: a unit being started from it keeps its open file).
func (h *Host) Stage() (string, error) {
	exe := h.Executable
	if exe == "" {
		exe = "/proc/self/exe"
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		return "", fmt.Errorf("stage evictguard on the host: read %s: %w", exe, err)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	node := filepath.Join(h.StateDir, "bin", "evictguard-"+digest[:16])
	path := h.Root.Path(node)
	if have, err := fileDigest(path); err == nil && have == digest {
		return node, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("stage evictguard on the host: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o755); err != nil {
		return "", fmt.Errorf("stage evictguard on the host: %w", err)
	}
	// WriteFile keeps the mode of a file it replaces; a copy is always executable.
	if err := os.Chmod(path, 0o755); err != nil {
		return "", fmt.Errorf("stage evictguard on the host: %w", err)
	}
	if have, err := fileDigest(path); err != nil {
		return "", fmt.Errorf("stage evictguard on the host: %w", err)
	} else if have != digest {
		return "", fmt.Errorf("stage evictguard on the host: %s has digest %s, not the %s written", node, have, digest)
	}
	h.log().Info("staged evictguard on the host", "path", node, "sha256", digest)
	h.prune(filepath.Dir(path), filepath.Base(path))
	return node, nil
}

// prune removes the copies of other versions (an upgraded DaemonSet stages its own): a unit
// still running one keeps its open file, and a later start always stages the running binary.
func (h *Host) prune(dir, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, "evictguard-*"))
	for _, f := range old {
		if filepath.Base(f) == keep || strings.HasPrefix(filepath.Base(f), ".") {
			continue
		}
		if err := os.Remove(f); err != nil {
			h.log().Warn("could not remove an old staged copy", "path", f, "err", err)
		}
	}
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(hash.Sum(nil)), nil
}

// Run is an evictguard command to run on the host for one journaled operation.
type Run struct {
	OpID        string
	Description string
	// Args follow the staged binary; paths in them are node paths.
	Args []string
	// Env is passed to the unit ("KEY=value").
	Env []string
}

// Start stages the binary and starts run as the operation's transient unit. It fails with an
// error wrapping sdbus.ErrUnitExists when the operation's unit is already loaded: the
// operation is running (adopt it with Wait instead).
func (h *Host) Start(ctx context.Context, run Run) error {
	if h.Systemd == nil {
		return errors.New("run on the host: systemd is unreachable over D-Bus")
	}
	bin, err := h.Stage()
	if err != nil {
		return err
	}
	out := h.Output(run.OpID)
	if err := os.MkdirAll(h.Root.Path(filepath.Dir(out)), 0o700); err != nil {
		return fmt.Errorf("run on the host: %w", err)
	}
	svc := sdbus.TransientService{
		Name:        UnitName(run.OpID),
		Description: run.Description,
		Argv:        append([]string{h.managerPath(bin)}, run.Args...),
		Environment: run.Env,
		Output:      h.managerPath(out),
		// A stop (a host shutdown) lets the operation reach its end: the unit's process
		// finishes or rolls back rather than abandon a step; SIGKILL after this long leaves it
		// resumable from the journal.
		StopTimeout: 15 * time.Minute,
	}
	if err := h.Systemd.StartTransient(ctx, svc, time.Minute); err != nil {
		return err
	}
	h.log().Info("operation started on the host", "op", run.OpID, "unit", svc.Name, "command", strings.Join(svc.Argv, " "))
	return nil
}

// State is what the manager says about an operation's unit.
type State struct {
	Unit string
	// Running: the unit is loaded and not (yet) inactive or failed.
	Running bool
	// Info is the unit's state, nil once the manager has collected it.
	Info *sdbus.UnitInfo
}

// Status reads the operation's unit.
func (h *Host) Status(ctx context.Context, opID string) (State, error) {
	st := State{Unit: UnitName(opID)}
	if h.Systemd == nil {
		return st, errors.New("systemd is unreachable over D-Bus")
	}
	u, err := h.Systemd.Unit(ctx, st.Unit)
	if errors.Is(err, sdbus.ErrUnitNotFound) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st.Info = u
	st.Running = u.ActiveState != "inactive" && u.ActiveState != "failed"
	return st, nil
}

// Wait follows the operation's unit until it is no longer running, calling tick (if set) at
// every poll, so the caller can report the journal's progress. It returns ctx's error if ctx
// ends first: the unit goes on regardless.
func (h *Host) Wait(ctx context.Context, opID string, poll time.Duration, tick func()) error {
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	failures := 0
	for {
		st, err := h.Status(ctx, opID)
		switch {
		case err != nil && ctx.Err() == nil:
			// The bus may drop while the runtime or the kubelet restarts; the client redials.
			failures++
			if failures%20 == 1 {
				h.log().Warn("cannot read the operation's unit; retrying", "unit", st.Unit, "err", err)
			}
		case err == nil:
			failures = 0
			if tick != nil {
				tick()
			}
			if !st.Running {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// OutputTail is the end of what the operation's unit printed (at most n bytes).
func (h *Host) OutputTail(opID string, n int64) string {
	f, err := os.Open(h.Root.Path(h.Output(opID)))
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
