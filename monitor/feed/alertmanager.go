package feed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/evictguard/evictguard/monitor"
)

// AlertmanagerConfig configures the direct feed.
type AlertmanagerConfig struct {
	// URLs are Alertmanager base URLs ("http://am:9093"); every alert goes to each (an HA
	// pair deduplicates).
	URLs []string
	// Node is the node name, the `node` label of every alert.
	Node string
	// GeneratorURL links back to this daemon (e.g. its /metrics).
	GeneratorURL string
	Policy       Policy
	// Resend is how often active alerts are re-posted (default 30s); each carries
	// endsAt = now + 4×Resend, so alerts of a daemon that died expire on their own.
	Resend time.Duration
	// MaxBackoff caps the retry delay after a failed post (default Resend).
	MaxBackoff time.Duration
	// Mismatches returns the /configz differences (nil for none).
	Mismatches func() []string
	Client     *http.Client
	Logger     *slog.Logger
	Now        func() time.Time
}

// Alertmanager posts the monitor's alerts to Alertmanager's v2 API.
type Alertmanager struct {
	cfg     AlertmanagerConfig
	tracker *Tracker
	log     *slog.Logger
	now     func() time.Time

	mu     sync.Mutex
	latest *monitor.Snapshot
	wake   chan struct{}

	// Run-loop state.
	active   map[string]Alert
	resolved map[string]resolvedAlert
}

type resolvedAlert struct {
	Alert
	at time.Time
}

// amAlert is an element of POST /api/v2/alerts (postableAlerts).
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// NewAlertmanager validates cfg and returns the feed; call Run in a goroutine.
func NewAlertmanager(cfg AlertmanagerConfig) (*Alertmanager, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("alertmanager feed: no URL")
	}
	for i, u := range cfg.URLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("alertmanager feed: URL %q is not http(s)", u)
		}
		cfg.URLs[i] = strings.TrimRight(u, "/")
	}
	if cfg.Resend <= 0 {
		cfg.Resend = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = cfg.Resend
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Alertmanager{
		cfg: cfg, tracker: NewTracker(cfg.Policy, cfg.Node), log: cfg.Logger.With("feed", "alertmanager"), now: cfg.Now,
		wake: make(chan struct{}, 1), active: map[string]Alert{}, resolved: map[string]resolvedAlert{},
	}, nil
}

// SetPolicy replaces the alert policy of a running feed (a config reload); active alerts
// and their start times are kept.
func (a *Alertmanager) SetPolicy(p Policy) { a.tracker.SetPolicy(p) }

// Notify hands over the latest snapshot. It never blocks: an older snapshot not yet
// processed is replaced.
func (a *Alertmanager) Notify(s *monitor.Snapshot) {
	a.mu.Lock()
	a.latest = s
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run evaluates each handed-over snapshot and posts when the set of alerts changes, every
// Resend while any is active or recently resolved, and with exponential backoff after a
// failure. It returns when ctx is done, without resolving: the alerts expire by endsAt.
func (a *Alertmanager) Run(ctx context.Context) {
	var (
		nextSend time.Time
		backoff  time.Duration
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-timer.C:
		}
		a.mu.Lock()
		snap := a.latest
		a.mu.Unlock()
		now := a.now()
		var mism []string
		if a.cfg.Mismatches != nil {
			mism = a.cfg.Mismatches()
		}
		changed := a.update(now, a.tracker.Update(now, snap, mism))
		due := !nextSend.IsZero() && !now.Before(nextSend)
		if changed || due {
			if len(a.active)+len(a.resolved) == 0 {
				nextSend = time.Time{}
			} else if err := a.post(ctx, now); err != nil {
				backoff = min(max(2*backoff, time.Second), a.cfg.MaxBackoff)
				nextSend = now.Add(backoff)
				a.log.Warn("posting alerts failed; retrying", "err", err, "retryIn", backoff)
			} else {
				backoff = 0
				nextSend = now.Add(a.cfg.Resend)
			}
		}
		if !nextSend.IsZero() {
			timer.Reset(max(nextSend.Sub(a.now()), 0))
		}
	}
}

// update records the firing set; it reports whether it changed. Resolved alerts are kept
// (and re-posted with their endsAt) for 4×Resend so that a lost post is repaired.
func (a *Alertmanager) update(now time.Time, firing []Alert) bool {
	changed := false
	next := make(map[string]Alert, len(firing))
	for _, al := range firing {
		k := al.Key()
		next[k] = al
		if _, ok := a.active[k]; !ok {
			changed = true
			delete(a.resolved, k)
			a.log.Info("alert firing", "alert", al.Name, "severity", al.Severity, "signal", al.Signal, "kind", al.Kind)
		}
	}
	for k, al := range a.active {
		if _, ok := next[k]; !ok {
			changed = true
			a.resolved[k] = resolvedAlert{Alert: al, at: now}
			a.log.Info("alert resolved", "alert", al.Name, "severity", al.Severity, "signal", al.Signal, "kind", al.Kind)
		}
	}
	for k, r := range a.resolved {
		if now.Sub(r.at) > 4*a.cfg.Resend {
			delete(a.resolved, k)
		}
	}
	a.active = next
	return changed
}

func (a *Alertmanager) payload(now time.Time) []amAlert {
	out := make([]amAlert, 0, len(a.active)+len(a.resolved))
	conv := func(al Alert, ends time.Time) amAlert {
		labels := map[string]string{"alertname": al.Name, "severity": al.Severity, "node": a.cfg.Node}
		for k, v := range map[string]string{"signal": al.Signal, "kind": al.Kind, "role": al.Role} {
			if v != "" {
				labels[k] = v
			}
		}
		return amAlert{
			Labels:       labels,
			Annotations:  map[string]string{"summary": al.Summary, "description": al.Description, "runbook_url": al.RunbookURL()},
			StartsAt:     al.Since.UTC(),
			EndsAt:       ends.UTC(),
			GeneratorURL: a.cfg.GeneratorURL,
		}
	}
	for _, al := range a.active {
		out = append(out, conv(al, now.Add(4*a.cfg.Resend)))
	}
	for _, r := range a.resolved {
		out = append(out, conv(r.Alert, r.at))
	}
	return out
}

// post sends the payload to every URL; the error joins the failures.
func (a *Alertmanager) post(ctx context.Context, now time.Time) error {
	body, err := json.Marshal(a.payload(now))
	if err != nil {
		return fmt.Errorf("encode alerts: %w", err)
	}
	var errs []error
	for _, u := range a.cfg.URLs {
		if err := a.postOne(ctx, u+"/api/v2/alerts", body); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Alertmanager) postOne(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("post %s: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
