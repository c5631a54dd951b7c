package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/evictguard/evictguard/internal/atomicfile"
)

// restartLog is the persisted record of kubelet restarts evictguard made
// (<state dir>/restarts.json), so that cooldowns and the daily budget survive evictguard
// restarts.
type restartLog struct {
	Restarts []time.Time `json:"restarts"`
}

func (j *Journal) restartLogPath() string {
	return j.root.Path(filepath.Join(j.stateDir, "restarts.json"))
}

// Restarts returns the recorded restarts, oldest first.
func (j *Journal) Restarts() ([]time.Time, error) {
	b, err := os.ReadFile(j.restartLogPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read restart log: %w", err)
	}
	var l restartLog
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("restart log %s is corrupt: %w", j.restartLogPath(), err)
	}
	return l.Restarts, nil
}

// RecordRestart appends t to the restart log (keeping the last 7 days).
func (j *Journal) RecordRestart(t time.Time) error {
	rs, err := j.Restarts()
	if err != nil {
		return err
	}
	rs = slices.DeleteFunc(append(rs, t.UTC()), func(x time.Time) bool { return t.Sub(x) > 7*24*time.Hour })
	b, err := json.MarshalIndent(restartLog{Restarts: rs}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(j.restartLogPath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write restart log: %w", err)
	}
	return nil
}
