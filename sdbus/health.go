package sdbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// HealthOptions configures WaitHealthy.
type HealthOptions struct {
	// URL, if set, must answer GET with 200 (e.g. the kubelet's http://127.0.0.1:10248/healthz).
	URL string
	// HTTPClient is used for URL; nil means a client with a short per-request timeout.
	HTTPClient *http.Client
	// StableFor is how long the unit must stay healthy — active/running, the same MainPID, no
	// automatic restart, URL answering 200 — before WaitHealthy returns. Zero: the first
	// healthy observation suffices.
	StableFor time.Duration
	// Timeout bounds the whole wait (in addition to ctx). Zero means DefaultHealthTimeout.
	Timeout time.Duration
	// PollInterval is the time between observations. Zero means 500ms, or less when StableFor
	// is short.
	PollInterval time.Duration
	// MaxRestarts is how many automatic restarts (NRestarts increments) are tolerated during
	// the wait before it fails early with ErrRestartLoop. Zero means DefaultMaxRestarts;
	// negative means no early failure (the wait still needs StableFor without a restart).
	MaxRestarts int
}

// Defaults for HealthOptions.
const (
	DefaultHealthTimeout = 2 * time.Minute
	DefaultMaxRestarts   = 2
)

var (
	// ErrHealthTimeout: the unit did not become and stay healthy in time.
	ErrHealthTimeout = errors.New("not healthy before the deadline")
	// ErrRestartLoop: the unit keeps being restarted automatically.
	ErrRestartLoop = errors.New("restart loop")
	// ErrUnitFailed: the unit is in the failed state; its manager will not restart it.
	ErrUnitFailed = errors.New("unit failed")
)

// HealthError says why WaitHealthy gave up, with the last observed state. It wraps one of
// ErrHealthTimeout, ErrRestartLoop, ErrUnitFailed or ErrUnitNotFound.
type HealthError struct {
	Unit     string
	Err      error
	Reason   string        // what was wrong at the last observation
	Waited   time.Duration // how long WaitHealthy waited
	Restarts uint32        // automatic restarts observed during the wait
	Last     *UnitInfo     // last observed state (nil if never read)
	URL      string
	URLErr   error // last result of the URL check (nil if it passed or was not reached)
}

func (e *HealthError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "unit %s not healthy after %s: %v", e.Unit, e.Waited.Round(time.Millisecond), e.Err)
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	fmt.Fprintf(&b, "; automatic restarts during wait: %d; last state: %s", e.Restarts, e.Last)
	if e.URL != "" && e.URLErr != nil {
		fmt.Fprintf(&b, "; health URL: %v", e.URLErr)
	}
	return b.String()
}

func (e *HealthError) Unwrap() error { return e.Err }

// WaitHealthy polls unit until it is active/running and has stayed so for opts.StableFor with
// the same MainPID, no automatic restart and opts.URL (if set) answering 200. It fails early
// when the unit is failed (the manager gave up on it), not found, or restarting in a loop;
// otherwise it returns a *HealthError wrapping ErrHealthTimeout at the deadline.
func (c *Client) WaitHealthy(ctx context.Context, unit string, opts HealthOptions) error {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	maxRestarts := opts.MaxRestarts
	if maxRestarts == 0 {
		maxRestarts = DefaultMaxRestarts
	}
	poll := opts.PollInterval
	if poll <= 0 {
		poll = 500 * time.Millisecond
		if opts.StableFor > 0 && opts.StableFor/5 < poll {
			poll = max(opts.StableFor/5, 50*time.Millisecond)
		}
	}
	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 3 * time.Second}
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var (
		herr        = &HealthError{Unit: unit, URL: opts.URL}
		seen        bool   // prevRestarts is valid
		prevRestart uint32 // NRestarts at the previous observation
		stableSince time.Time
		stablePID   int
		ticker      = time.NewTicker(poll)
	)
	defer ticker.Stop()
	fail := func(err error, reason string) error {
		herr.Err, herr.Reason, herr.Waited = err, reason, time.Since(start)
		c.log.Warn("unit not healthy", "unit", unit, "err", herr)
		return herr
	}
	for {
		healthy, restarted := false, false
		u, err := c.Unit(ctx, unit)
		switch {
		case errors.Is(err, ErrUnitNotFound):
			return fail(ErrUnitNotFound, "")
		case err != nil:
			if ctx.Err() == nil {
				herr.Reason = err.Error()
			}
		default:
			herr.Last = u
			// NRestarts only grows, except that a manual start resets it.
			if seen && u.NRestarts > prevRestart {
				herr.Restarts += u.NRestarts - prevRestart
				restarted = true
			}
			seen, prevRestart = true, u.NRestarts
			switch {
			case maxRestarts > 0 && int(herr.Restarts) > maxRestarts:
				return fail(ErrRestartLoop, fmt.Sprintf("restarted automatically %d times (more than %d) with Restart=%s",
					herr.Restarts, maxRestarts, u.Restart))
			case u.LoadState != "loaded":
				return fail(ErrUnitFailed, "LoadState is "+u.LoadState)
			case u.ActiveState == "failed":
				return fail(ErrUnitFailed, fmt.Sprintf("the manager gave up on it (Result=%s, Restart=%s)", u.Result, u.Restart))
			case u.ActiveState != "active" || u.SubState != "running":
				herr.Reason = fmt.Sprintf("unit is %s/%s", u.ActiveState, u.SubState)
			default:
				herr.Reason, herr.URLErr = "", nil
				if opts.URL != "" {
					herr.URLErr = checkURL(ctx, httpClient, opts.URL)
				}
				if herr.URLErr != nil {
					herr.Reason = "health URL not answering 200"
				} else {
					healthy = true
				}
			}
		}
		now := time.Now()
		switch {
		case !healthy:
			stableSince = time.Time{}
		case stableSince.IsZero() || restarted || u.MainPID != stablePID:
			// Newly healthy, or a restart in between: the stability window starts now.
			stableSince, stablePID = now, u.MainPID
		}
		if healthy && now.Sub(stableSince) >= opts.StableFor {
			c.log.Info("unit healthy", "unit", unit, "main_pid", u.MainPID,
				"stable_seconds", now.Sub(stableSince).Seconds(), "waited_seconds", time.Since(start).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			if healthy {
				herr.Reason = fmt.Sprintf("healthy for only %s of the required %s", now.Sub(stableSince).Round(time.Millisecond), opts.StableFor)
			}
			return fail(ErrHealthTimeout, herr.Reason)
		case <-ticker.C:
		}
	}
}

func checkURL(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %q", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
