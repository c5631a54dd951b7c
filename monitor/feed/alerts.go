// Package feed delivers what the monitor found to where SREs look without Prometheus: a
// direct Alertmanager feed (the same alerts the shipped rules raise, posted to the v2 API)
// and, on the API server, Events on the Node object and a Node condition of evictguard's own
// (EvictionPredicted, never the kubelet's DiskPressure).
//
// Writes: POST /api/v2/alerts on each configured Alertmanager; in the cluster, core/v1 Events
// in the "default" namespace (where the kubelet puts Node events) and the EvictionPredicted
// condition in the Node's status (GET nodes/NAME, PATCH nodes/NAME/status). It reads nothing
// on the host.
//
// Every feed takes snapshots through a non-blocking Notify (the latest one wins) and does its
// network I/O in its own Run loop, so a slow or dead endpoint never delays monitoring.
package feed

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/evictguard/evictguard/monitor"
)

// Alert names: the same as the shipped Prometheus rules (deploy/prometheus).
const (
	AlertEvictionImminent           = "EvictionImminent"
	AlertEvictionThresholdBreached  = "EvictionThresholdBreached"
	AlertEvictionThresholdsMismatch = "EvictionThresholdsMismatch"
)

// Severities.
const (
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// RunbookBase is where each alert's runbook lives: RunbookBase + alert name + ".md", the
// same page the shipped rules' runbook_url names.
const RunbookBase = "https://github.com/evictguard/evictguard/blob/main/docs/runbooks/"

// Policy says when an eviction is "imminent"; the defaults are the shipped rules'.
type Policy struct {
	// WarningHorizon and CriticalHorizon: predicted time to threshold below which
	// EvictionImminent fires with severity warning / critical (defaults 1h and 10m).
	WarningHorizon, CriticalHorizon time.Duration
	// ExitFactor: a firing EvictionImminent stays firing until the prediction exceeds
	// ExitFactor × its horizon (default 1.5), so a prediction hovering at the horizon does
	// not flap.
	ExitFactor float64
	// For: the condition must hold this long before the alert fires (default 1m; negative
	// means 0).
	For time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.WarningHorizon <= 0 {
		p.WarningHorizon = time.Hour
	}
	if p.CriticalHorizon <= 0 {
		p.CriticalHorizon = 10 * time.Minute
	}
	if p.ExitFactor < 1 {
		p.ExitFactor = 1.5
	}
	if p.For < 0 {
		p.For = 0
	} else if p.For == 0 {
		p.For = time.Minute
	}
	return p
}

// Alert is one firing alert derived from a snapshot.
type Alert struct {
	Name, Severity       string
	Signal, Kind, Role   string
	Summary, Description string
	// Seconds is the predicted time to the threshold (EvictionImminent).
	Seconds float64
	// Since is when the condition started to hold (the alert's startsAt).
	Since time.Time
}

// Key identifies an alert across snapshots.
func (a Alert) Key() string { return a.Name + "/" + a.Severity + "/" + a.Signal + "/" + a.Kind }

// RunbookURL is the alert's runbook page.
func (a Alert) RunbookURL() string { return RunbookBase + a.Name + ".md" }

// Tracker turns successive snapshots into firing alerts with the rules' `for:` and
// hysteresis. Safe for concurrent use.
type Tracker struct {
	policy Policy
	node   string

	mu      sync.Mutex
	pending map[string]time.Time // condition holds since
	firing  map[string]bool
}

// NewTracker returns a tracker; node names the node in summaries.
func NewTracker(p Policy, node string) *Tracker {
	return &Tracker{policy: p.withDefaults(), node: node, pending: map[string]time.Time{}, firing: map[string]bool{}}
}

// Policy returns the effective policy (defaults applied).
func (t *Tracker) Policy() Policy {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.policy
}

// SetPolicy replaces the policy (a config reload). Pending and firing alerts are kept: a
// firing alert resolves, and a pending one fires, by the new horizons and `for:` from the
// next Update on.
func (t *Tracker) SetPolicy(p Policy) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.policy = p.withDefaults()
}

// Pending reports whether some alert's condition holds but has not held for `for:` yet.
func (t *Tracker) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.pending {
		if !t.firing[k] {
			return true
		}
	}
	return false
}

// Update evaluates snap (taken at now) and returns the firing alerts, sorted by key.
// mismatches are the differences between computed thresholds and /configz.
func (t *Tracker) Update(now time.Time, snap *monitor.Snapshot, mismatches []string) []Alert {
	t.mu.Lock()
	defer t.mu.Unlock()
	var cands []Alert
	if snap != nil {
		for _, s := range snap.Signals {
			base := Alert{Signal: s.Signal, Kind: s.Kind, Role: monitor.SignalRole(s.Signal)}
			if s.State == monitor.StateBreached {
				a := base
				a.Name, a.Severity = AlertEvictionThresholdBreached, SeverityCritical
				a.Summary = fmt.Sprintf("%s is past its %s eviction threshold on %s", s.Signal, s.Kind, t.node)
				a.Description = fmt.Sprintf("%s on %s has crossed the kubelet's %s eviction threshold %s (%d available, threshold %d). The kubelet reports pressure, rejects new pods and evicts pods until the signal recovers by its minimum reclaim.",
					s.Signal, t.node, s.Kind, s.Threshold, s.Observed, s.ThresholdQuantity)
				cands = append(cands, a)
				continue
			}
			if s.SecondsToThreshold == nil {
				continue
			}
			secs := *s.SecondsToThreshold
			for _, lvl := range []struct {
				sev     string
				horizon time.Duration
			}{{SeverityWarning, t.policy.WarningHorizon}, {SeverityCritical, t.policy.CriticalHorizon}} {
				a := base
				a.Name, a.Severity, a.Seconds = AlertEvictionImminent, lvl.sev, secs
				limit := lvl.horizon.Seconds()
				if t.firing[a.Key()] {
					limit *= t.policy.ExitFactor
				}
				if secs >= limit {
					continue
				}
				d := (time.Duration(secs) * time.Second).Round(time.Second)
				a.Summary = fmt.Sprintf("%s will reach its eviction threshold in %s on %s", s.Signal, d, t.node)
				a.Description = fmt.Sprintf("At the current fill rate %s on %s reaches the kubelet's %s eviction threshold %s in %s (around %s). When it does, the kubelet sets DiskPressure, stops admitting pods and evicts running ones.",
					s.Signal, t.node, s.Kind, s.Threshold, d, now.Add(d).UTC().Format(time.RFC3339))
				cands = append(cands, a)
			}
		}
	}
	if len(mismatches) > 0 {
		cands = append(cands, Alert{Name: AlertEvictionThresholdsMismatch, Severity: SeverityWarning,
			Summary:     fmt.Sprintf("The kubelet on %s enforces other eviction thresholds than its configuration says", t.node),
			Description: fmt.Sprintf("The eviction thresholds computed from the kubelet's flags and files differ from its /configz: %v", mismatches)})
	}

	seen := map[string]bool{}
	var out []Alert
	for _, a := range cands {
		k := a.Key()
		seen[k] = true
		since, ok := t.pending[k]
		if !ok {
			since = now
			t.pending[k] = now
		}
		forD := t.policy.For
		if a.Name != AlertEvictionImminent {
			forD = 0 // Breached and Mismatch fire at once, as in the rules' intent for the feed
		}
		if now.Sub(since) >= forD {
			t.firing[k] = true
			a.Since = since
			out = append(out, a)
		}
	}
	for k := range t.pending {
		if !seen[k] {
			delete(t.pending, k)
			delete(t.firing, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}
