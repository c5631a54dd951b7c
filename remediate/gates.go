package remediate

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

// GateInput is what the local gates look at.
type GateInput struct {
	Now time.Time
	// KubeletSince is the kubelet unit's InactiveExitTimestamp (zero: unknown).
	KubeletSince time.Time
	Restarts     []time.Time
	FailedOps    []*Operation
}

// LocalBlockers returns why the policy forbids acting now, from local facts only: operations
// an operator must clear, the maintenance windows, the cooldown, the daily restart budget and
// the kubelet's uptime. Dry run is not a blocker here; callers report it separately.
func (p *Policy) LocalBlockers(in GateInput) []string {
	var out []string
	for _, op := range in.FailedOps {
		out = append(out, fmt.Sprintf("operation %s failed and could not be rolled back; run `evictguard apply --clear %s` after checking the node", op.ID, op.ID))
	}
	if ok, why := p.InWindow(in.Now); !ok {
		out = append(out, why)
	}
	if n := len(in.Restarts); n > 0 {
		last := in.Restarts[n-1]
		if since := in.Now.Sub(last); since < p.Cooldown.Duration {
			out = append(out, fmt.Sprintf("within cooldown: evictguard restarted the kubelet %s ago (cooldown %s)", since.Round(time.Second), p.Cooldown.Duration))
		}
	}
	day := 0
	for _, r := range in.Restarts {
		if in.Now.Sub(r) < 24*time.Hour {
			day++
		}
	}
	if p.MaxRestartsPerDay > 0 && day >= p.MaxRestartsPerDay {
		out = append(out, fmt.Sprintf("restart budget spent: %d kubelet restarts in the last 24h (max %d)", day, p.MaxRestartsPerDay))
	}
	switch {
	case in.KubeletSince.IsZero() && p.MinKubeletUptime.Duration > 0:
		out = append(out, "kubelet uptime unknown (no InactiveExitTimestamp): not active?")
	case in.Now.Sub(in.KubeletSince) < p.MinKubeletUptime.Duration:
		out = append(out, fmt.Sprintf("kubelet up for %s only (minimum %s)", in.Now.Sub(in.KubeletSince).Round(time.Second), p.MinKubeletUptime.Duration))
	}
	return out
}
