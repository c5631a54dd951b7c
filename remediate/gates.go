package remediate

import (
	"fmt"
	"time"

	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/policy"
)

// GateInput is what the local gates look at.
type GateInput struct {
	Now time.Time
	// KubeletSince is the kubelet unit's InactiveExitTimestamp (zero: unknown).
	KubeletSince time.Time
	Restarts     []time.Time
	FailedOps    []*journal.Operation
}

// LocalBlockers returns why the policy forbids acting now, from local facts only: operations
// an operator must clear, the maintenance windows, the cooldown, the daily restart budget and
// the kubelet's uptime. Dry run is not a blocker here; callers report it separately.
func LocalBlockers(p *policy.Policy, in GateInput) []string {
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
