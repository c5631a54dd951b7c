package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// FieldError is a validation error of one key; Path is dotted ("monitor.interval",
// "policy.windows[0].start").
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Validate checks every field and the rules between fields. The error joins one
// *FieldError per problem.
func (c *Configuration) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.APIVersion != APIVersion {
		bad("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		bad("kind", "must be %q, not %q", Kind, c.Kind)
	}
	m := c.Monitor
	if m.Interval.Duration <= 0 {
		bad("monitor.interval", "must be positive, not %v", m.Interval.Duration)
	}
	if m.WarnHorizon.Duration <= 0 {
		bad("monitor.warnHorizon", "must be positive, not %v", m.WarnHorizon.Duration)
	}
	if m.WarnMargin < 0 || m.WarnMargin >= 1 {
		bad("monitor.warnMargin", "must be in [0, 1), not %v", m.WarnMargin)
	}
	if m.StatfsTimeout.Duration <= 0 {
		bad("monitor.statfsTimeout", "must be positive, not %v", m.StatfsTimeout.Duration)
	} else if m.StatfsTimeout.Duration > m.Interval.Duration && m.Interval.Duration > 0 && m.Interval.Duration < time.Second {
		// A statfs timeout far above a sub-second interval makes cycles overrun.
		bad("monitor.statfsTimeout", "%v is longer than monitor.interval %v", m.StatfsTimeout.Duration, m.Interval.Duration)
	}
	if m.RediscoverInterval.Duration < 0 {
		bad("monitor.rediscoverInterval", "must not be negative (0s: only after a migration in the journal), not %v", m.RediscoverInterval.Duration)
	}
	if m.HistoryFile != "" && !strings.HasPrefix(m.HistoryFile, "/") {
		bad("monitor.historyFile", "must be an absolute node path, not %q", m.HistoryFile)
	}
	for i, d := range m.LogDirs {
		if !strings.HasPrefix(d, "/") {
			bad(fmt.Sprintf("monitor.logDirs[%d]", i), "%q is not an absolute node path", d)
		}
	}
	switch m.Runtime {
	case "", "docker", "containerd", "crio":
	default:
		bad("monitor.runtime", "must be docker, containerd or crio, not %q", m.Runtime)
	}
	if m.KubeletVersion != "" && !kubeletVersionRE.MatchString(m.KubeletVersion) {
		bad("monitor.kubeletVersion", "%q is not X.Y or X.Y.Z", m.KubeletVersion)
	}
	if m.Configz.Interval.Duration <= 0 {
		bad("monitor.configz.interval", "must be positive")
	}
	if m.Configz.TokenFile != "" && m.Configz.URL == "" {
		bad("monitor.configz.tokenFile", "is set but monitor.configz.url is empty")
	}
	if h := m.Hysteresis; h.ExitBand <= 0 || h.ExitBand > 1 {
		bad("monitor.hysteresis.exitBand", "must be in (0, 1], not %v", h.ExitBand)
	}
	if m.Hysteresis.BreachHold.Duration < 0 {
		bad("monitor.hysteresis.breachHold", "must not be negative")
	}
	switch c.Metrics.Auth {
	case "", MetricsAuthNone, MetricsAuthKubernetes:
	default:
		bad("metrics.auth", "%q is not one of none, kubernetes", c.Metrics.Auth)
	}
	if (c.Metrics.TLS.CertFile == "") != (c.Metrics.TLS.KeyFile == "") {
		bad("metrics.tls", "certFile and keyFile go together")
	}
	if c.Metrics.Listen != "" {
		if _, port, err := splitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%v", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("metrics.listen", "port %q is not a number in 0…65535", port)
		}
	}
	for i, u := range c.Alerts.AlertmanagerURLs {
		if err := checkURL(u); err != nil {
			bad(fmt.Sprintf("alerts.alertmanagerURLs[%d]", i), "%v", err)
		}
	}
	if c.Alerts.Resend.Duration <= 0 {
		bad("alerts.resend", "must be positive")
	}
	if c.Alerts.For.Duration < 0 {
		bad("alerts.for", "must not be negative")
	}
	if c.Alerts.CriticalHorizon.Duration <= 0 {
		bad("alerts.criticalHorizon", "must be positive")
	} else if c.Alerts.CriticalHorizon.Duration > m.WarnHorizon.Duration && m.WarnHorizon.Duration > 0 {
		bad("alerts.criticalHorizon", "%v is longer than monitor.warnHorizon %v (critical must be the nearer horizon)",
			c.Alerts.CriticalHorizon.Duration, m.WarnHorizon.Duration)
	}
	for _, e := range c.Policy.Validate() {
		bad("policy."+e.Field, "%s", e.Detail)
	}
	if !c.Policy.Dry() {
		// Acting needs somewhere to journal, and the lock/pod blockers need the API server:
		// these are checked when the client is built; the state dir is checked here.
		if !strings.HasPrefix(c.Actions.StateDir, "/") {
			bad("actions.stateDir", "%q is not an absolute node path (needed when policy.dryRun is false)", c.Actions.StateDir)
		}
	}
	if c.Policy.Blockers.AlertmanagerURL != "" {
		if err := checkURL(c.Policy.Blockers.AlertmanagerURL); err != nil {
			bad("policy.blockers.alertmanagerURL", "%v", err)
		}
	}
	if c.Actions.KubeletUnit == "" || !strings.Contains(c.Actions.KubeletUnit, ".") {
		bad("actions.kubeletUnit", "%q is not a unit name such as kubelet.service", c.Actions.KubeletUnit)
	}
	if err := checkURL(c.Actions.Healthz); err != nil {
		bad("actions.healthz", "%v", err)
	}
	c.validateLogsAndReclaim(bad)
	return errors.Join(errs...)
}

// validateLogsAndReclaim checks logs.budget and actions.reclaim.
func (c *Configuration) validateLogsAndReclaim(bad func(path, format string, args ...any)) {
	absPath := func(path, p string) {
		if p != "" && !strings.HasPrefix(p, "/") {
			bad(path, "%q is not an absolute node path", p)
		}
	}
	quantity := func(path, s string) int64 {
		n, err := ParseQuantity(s)
		if err != nil {
			bad(path, "%v", err)
		}
		return n
	}
	absPath("logs.budget.file", c.Logs.Budget.File)
	if _, _, err := ParseMargin(c.Logs.Budget.Margin); err != nil {
		bad("logs.budget.margin", "%v", err)
	}
	r := c.Actions.Reclaim
	seen := map[string]bool{}
	for i, name := range r.Allow {
		path := fmt.Sprintf("actions.reclaim.allow[%d]", i)
		switch {
		case ReclaimSteps[name] == "":
			bad(path, "unknown step %q (want ballast, gc, logs or escalate)", name)
		case seen[name]:
			bad(path, "%q is listed twice", name)
		}
		seen[name] = true
	}
	if r.Horizon.Duration <= 0 {
		bad("actions.reclaim.horizon", "must be positive, not %v", r.Horizon.Duration)
	}
	quantity("actions.reclaim.lowHeadroom", r.LowHeadroom)
	size := quantity("actions.reclaim.ballast.size", r.Ballast.Size)
	absPath("actions.reclaim.ballast.path", r.Ballast.Path)
	if i := slices.Index(r.Allow, "ballast"); i >= 0 && size == 0 {
		bad(fmt.Sprintf("actions.reclaim.allow[%d]", i), "ballast is allowed but actions.reclaim.ballast.size is not set (there is no ballast to release)")
	}
	if r.GC.KeepExited < 0 {
		bad("actions.reclaim.gc.keepExited", "must not be negative, not %d", r.GC.KeepExited)
	}
	for i, ref := range r.GC.KeepImages {
		if strings.TrimSpace(ref) == "" {
			bad(fmt.Sprintf("actions.reclaim.gc.keepImages[%d]", i), "is empty")
		}
	}
	if r.RotatedLogs.MinAge.Duration < 0 {
		bad("actions.reclaim.rotatedLogs.minAge", "must not be negative")
	}
	for i, p := range r.RotatedLogs.PosFiles {
		if !strings.HasPrefix(p, "/") {
			bad(fmt.Sprintf("actions.reclaim.rotatedLogs.posFiles[%d]", i), "%q is not an absolute node path", p)
		}
	}
}

// ParseQuantity parses a byte quantity such as "512Mi" or "1G" ("" is 0).
func ParseQuantity(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity such as 512Mi: %w", s, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return q.Value(), nil
}

// ParseMargin parses the log-budget margin: "N%" of capacity (0 <= N < 100) or a quantity.
func ParseMargin(s string) (percent float64, bytes int64, err error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil || p < 0 || p >= 100 {
			return 0, 0, fmt.Errorf("%q is not a percentage in [0%%, 100%%)", s)
		}
		return p, 0, nil
	}
	n, err := ParseQuantity(s)
	if err != nil {
		return 0, 0, err
	}
	return 0, n, nil
}

var kubeletVersionRE = regexp.MustCompile(`^v?\d+\.\d+(\.\d+)?$`)

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", fmt.Errorf("%q is not host:port", s)
	}
	return s[:i], s[i+1:], nil
}
