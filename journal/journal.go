package journal

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/evictguard/evictguard/internal/atomicfile"
	"github.com/evictguard/evictguard/internal/hostfs"
)

// DefaultStateDir is where evictguard keeps its journal and backups on the node.
const DefaultStateDir = "/var/lib/evictguard"

// Operation states.
const (
	StateInProgress = "in-progress"
	StateDone       = "done"
	StateRolledBack = "rolled-back"
	// StateFailed means neither the change nor its rollback could be verified: evictguard
	// stops acting until an operator clears it (Journal.Clear).
	StateFailed = "failed"
)

// Operation is one journaled change to the node. It is persisted after every step, so a
// crash at any point leaves a record of what was done and what the files looked like before.
type Operation struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"` // e.g. "threshold-rewrite", "migrate-data-root"
	Started time.Time `json:"started"`
	State   string    `json:"state"`
	// Step is the last step completed ("" before the first).
	Step    string         `json:"step"`
	Files   []FileChange   `json:"files,omitempty"`
	Data    map[string]any `json:"data,omitempty"`
	History []StepRecord   `json:"history"`
	// Reported is when the outcome of the ended operation was reported (log, Node Event,
	// metrics) by whoever followed it; nil when it ended while nobody did (its process or pod
	// was gone), so that the next daemon reports it.
	Reported *time.Time `json:"reported,omitempty"`
}

// FileChange records one host file the operation writes: where its original is kept and the
// checksums before and after, so a restore can tell which version is on disk.
type FileChange struct {
	Path    string `json:"path"` // node path
	Existed bool   `json:"existed"`
	Mode    uint32 `json:"mode,omitempty"`
	Backup  string `json:"backup,omitempty"` // node path of the copy of the original
	Before  string `json:"before,omitempty"` // sha256 of the original
	After   string `json:"after,omitempty"`  // sha256 of what the operation wrote
}

// StepRecord is one line of an operation's history.
type StepRecord struct {
	Step string    `json:"step"`
	At   time.Time `json:"at"`
	Note string    `json:"note,omitempty"`
}

// Journal persists operations and file backups under a state directory on the node
// (DefaultStateDir/journal and DefaultStateDir/backups under the host root).
type Journal struct {
	root     hostfs.Root
	stateDir string // node path
	log      *slog.Logger
	now      func() time.Time
}

// Open opens the journal under stateDir (DefaultStateDir when empty). It writes
// nothing: the directories are created by the first write, so read-only users (plan, a
// dry run) leave no trace on the host.
func Open(root hostfs.Root, stateDir string, log *slog.Logger) (*Journal, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Journal{root: root, stateDir: stateDir, log: log, now: time.Now}, nil
}

func (j *Journal) ensureDirs() error {
	for _, d := range []string{j.journalDir(), j.backupDir()} {
		if err := os.MkdirAll(j.root.Path(d), 0o700); err != nil {
			return fmt.Errorf("create journal directory %s: %w", d, err)
		}
	}
	return nil
}

func (j *Journal) journalDir() string { return filepath.Join(j.stateDir, "journal") }
func (j *Journal) backupDir() string  { return filepath.Join(j.stateDir, "backups") }
func (j *Journal) opPath(id string) string {
	return j.root.Path(filepath.Join(j.journalDir(), id+".json"))
}

// Begin starts and persists a new operation.
func (j *Journal) Begin(kind string, data map[string]any) (*Operation, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	now := j.now().UTC()
	op := &Operation{
		ID:      fmt.Sprintf("%s-%s-%s", now.Format("20060102T150405Z"), kind, hex.EncodeToString(b[:])),
		Kind:    kind,
		Started: now,
		State:   StateInProgress,
		Data:    data,
		History: []StepRecord{{Step: "begin", At: now}},
	}
	if err := j.Save(op); err != nil {
		return nil, err
	}
	j.log.Info("operation started", "op", op.ID, "kind", kind)
	return op, nil
}

// Step records that a step completed.
func (j *Journal) Step(op *Operation, step, note string) error {
	op.Step = step
	op.History = append(op.History, StepRecord{Step: step, At: j.now().UTC(), Note: note})
	if err := j.Save(op); err != nil {
		return err
	}
	j.log.Info("operation step", "op", op.ID, "step", step, "note", note)
	return nil
}

// Finish records the final state (StateDone, StateRolledBack or StateFailed).
func (j *Journal) Finish(op *Operation, state, note string) error {
	op.State = state
	op.History = append(op.History, StepRecord{Step: state, At: j.now().UTC(), Note: note})
	if err := j.Save(op); err != nil {
		return err
	}
	j.log.Info("operation finished", "op", op.ID, "state", state, "note", note)
	return nil
}

// MarkReported records that the ended operation's outcome was reported. Only for an ended
// operation: nothing else writes its entry then.
func (j *Journal) MarkReported(op *Operation) error {
	if op.State == StateInProgress {
		return fmt.Errorf("operation %s is still in progress", op.ID)
	}
	now := j.now().UTC()
	op.Reported = &now
	return j.Save(op)
}

// Unreported returns the operations of kind that ended since `since` without their outcome
// being reported.
func (j *Journal) Unreported(kind string, since time.Time) ([]*Operation, error) {
	ops, err := j.List()
	if err != nil {
		return nil, err
	}
	var out []*Operation
	for _, op := range ops {
		if op.Kind != kind || op.State == StateInProgress || op.Reported != nil || len(op.History) == 0 {
			continue
		}
		if op.History[len(op.History)-1].At.Before(since) {
			continue
		}
		out = append(out, op)
	}
	return out, nil
}

// Save persists op as it is now (atomically): the migration records its own progress in
// op.Data between steps.
func (j *Journal) Save(op *Operation) error {
	if err := j.ensureDirs(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(op, "", "  ")
	if err != nil {
		return fmt.Errorf("encode journal entry %s: %w", op.ID, err)
	}
	if err := atomicfile.WriteFile(j.opPath(op.ID), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write journal entry %s: %w", op.ID, err)
	}
	return nil
}

// Load reads one operation.
func (j *Journal) Load(id string) (*Operation, error) {
	b, err := os.ReadFile(j.opPath(id))
	if err != nil {
		return nil, fmt.Errorf("read journal entry %s: %w", id, err)
	}
	var op Operation
	if err := json.Unmarshal(b, &op); err != nil {
		return nil, fmt.Errorf("journal entry %s is corrupt: %w", id, err)
	}
	return &op, nil
}

// List returns all operations, oldest first.
func (j *Journal) List() ([]*Operation, error) {
	entries, err := os.ReadDir(j.root.Path(j.journalDir()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // nothing journaled yet
	}
	if err != nil {
		return nil, fmt.Errorf("read journal directory: %w", err)
	}
	var ops []*Operation
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || filepath.Ext(name) != ".json" {
			continue
		}
		op, err := j.Load(name[:len(name)-len(".json")])
		if err != nil {
			return nil, err
		}
		ops = append(ops, op)
	}
	sort.Slice(ops, func(a, b int) bool { return ops[a].Started.Before(ops[b].Started) })
	return ops, nil
}

// Unfinished returns the operations a crash interrupted (state in-progress).
func (j *Journal) Unfinished() ([]*Operation, error) { return j.filter(StateInProgress) }

// Failed returns the operations that need an operator (state failed); while any exists,
// evictguard must not act.
func (j *Journal) Failed() ([]*Operation, error) { return j.filter(StateFailed) }

func (j *Journal) filter(state string) ([]*Operation, error) {
	all, err := j.List()
	if err != nil {
		return nil, err
	}
	var out []*Operation
	for _, op := range all {
		if op.State == state {
			out = append(out, op)
		}
	}
	return out, nil
}

// Clear marks a failed operation as handled by an operator.
func (j *Journal) Clear(id, note string) error {
	op, err := j.Load(id)
	if err != nil {
		return err
	}
	if op.State != StateFailed {
		return fmt.Errorf("operation %s is %s, not failed", id, op.State)
	}
	return j.Finish(op, "cleared", note)
}

// WriteFile changes a host file as part of op: the original (if any) is copied to the backup
// directory and fsynced, the change is recorded in the journal, and only then is the new
// content written atomically. Calling it again for the same path keeps the first backup.
func (j *Journal) WriteFile(op *Operation, nodePath string, content []byte, perm fs.FileMode) error {
	hostPath := j.root.Path(nodePath)
	fc := op.file(nodePath)
	if fc == nil {
		old, err := os.ReadFile(hostPath)
		change := FileChange{Path: nodePath}
		switch {
		case err == nil:
			st, statErr := os.Stat(hostPath)
			if statErr != nil {
				return fmt.Errorf("stat %s: %w", nodePath, statErr)
			}
			change.Existed = true
			change.Mode = uint32(st.Mode().Perm())
			change.Before = checksum(old)
			change.Backup = filepath.Join(j.backupDir(), op.ID, nodePath)
			if err := os.MkdirAll(filepath.Dir(j.root.Path(change.Backup)), 0o700); err != nil {
				return fmt.Errorf("create backup directory for %s: %w", nodePath, err)
			}
			if err := atomicfile.WriteFile(j.root.Path(change.Backup), old, 0o600); err != nil {
				return fmt.Errorf("back up %s: %w", nodePath, err)
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return fmt.Errorf("read %s: %w", nodePath, err)
		}
		op.Files = append(op.Files, change)
		fc = &op.Files[len(op.Files)-1]
	}
	fc.After = checksum(content)
	// Journal first: after a crash between these two writes, the journal knows the file may
	// hold either version and the backup restores the original.
	if err := j.Save(op); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(hostPath), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", nodePath, err)
	}
	if err := atomicfile.WriteFile(hostPath, content, perm); err != nil {
		return fmt.Errorf("write %s: %w", nodePath, err)
	}
	j.log.Info("file written", "op", op.ID, "path", nodePath, "backup", fc.Backup)
	return nil
}

// RestoreFiles puts every file op wrote back to its original content (removing the files op
// created), in reverse order. It is idempotent, so it is safe to repeat after a crash.
func (j *Journal) RestoreFiles(op *Operation) error {
	var errs []error
	for i := len(op.Files) - 1; i >= 0; i-- {
		fc := op.Files[i]
		hostPath := j.root.Path(fc.Path)
		if !fc.Existed {
			if err := os.Remove(hostPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", fc.Path, err))
			} else if err == nil {
				_ = atomicfile.SyncDir(filepath.Dir(hostPath))
			}
			continue
		}
		orig, err := os.ReadFile(j.root.Path(fc.Backup))
		if err != nil {
			errs = append(errs, fmt.Errorf("read backup of %s: %w", fc.Path, err))
			continue
		}
		if checksum(orig) != fc.Before {
			errs = append(errs, fmt.Errorf("backup of %s at %s does not match its recorded checksum; not restoring", fc.Path, fc.Backup))
			continue
		}
		if cur, err := os.ReadFile(hostPath); err == nil && bytes.Equal(cur, orig) {
			continue
		}
		if err := atomicfile.WriteFile(hostPath, orig, fs.FileMode(fc.Mode)); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", fc.Path, err))
		}
	}
	if len(errs) == 0 {
		j.log.Info("files restored", "op", op.ID, "count", len(op.Files))
	}
	return errors.Join(errs...)
}

// FileState says which recorded version a file holds now: "before", "after", "absent" or
// "unknown" (neither: somebody else changed it).
func (j *Journal) FileState(fc FileChange) string {
	b, err := os.ReadFile(j.root.Path(fc.Path))
	if errors.Is(err, fs.ErrNotExist) {
		if !fc.Existed {
			return "before"
		}
		return "absent"
	}
	if err != nil {
		return "unknown"
	}
	switch checksum(b) {
	case fc.After:
		return "after"
	case fc.Before:
		return "before"
	}
	return "unknown"
}

func (op *Operation) file(nodePath string) *FileChange {
	for i := range op.Files {
		if op.Files[i].Path == nodePath {
			return &op.Files[i]
		}
	}
	return nil
}

func checksum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
