package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestAlertsDirectFeed: without Prometheus, `evictguard run --alertmanager.url` posts
// EvictionImminent to a real Alertmanager's v2 API before the threshold is crossed, keeps it
// alive by re-sending, and resolves it when space is freed.
func TestAlertsDirectFeed(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	start := time.Now()
	am := harness.StartAlertmanager(t, "")
	sc := newFillScenario(t, 90*time.Second, 256<<10)
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	p := startDaemon(t, "evictguard-direct", sc.Args(listen,
		"--alertmanager.url", am.URL, "--alertmanager.resend", "3s", "--alert-for", "5s", "--node-name", "node-direct")...)

	stop := sc.StartWriter(t)
	fillStart := time.Now()
	var fired []amAlert
	err := harness.WaitFor(context.Background(), 80*time.Second, p, func() error {
		as, err := activeAlerts(am, "EvictionImminent", "nodefs.available")
		if err != nil {
			return err
		}
		if len(as) == 0 {
			return errors.New("no EvictionImminent alert yet")
		}
		fired = as
		return nil
	})
	if err != nil {
		t.Fatalf("EvictionImminent did not arrive in Alertmanager: %v", err)
	}
	avail := sc.Available(t)
	t.Logf("EvictionImminent posted %s after the writer started, %.1f MiB above the threshold:\n%s",
		time.Since(fillStart).Round(time.Second), float64(avail-sc.Threshold)/(1<<20), describeAlerts(fired))
	if avail <= sc.Threshold {
		t.Fatalf("alert arrived only after the threshold was crossed")
	}
	for _, a := range fired {
		want := map[string]string{"alertname": "EvictionImminent", "node": "node-direct", "signal": "nodefs.available", "role": "nodefs", "kind": "hard"}
		for k, v := range want {
			if a.Labels[k] != v {
				t.Errorf("label %s = %q, want %q (%v)", k, a.Labels[k], v, a.Labels)
			}
		}
		if a.Labels["severity"] != "warning" && a.Labels["severity"] != "critical" {
			t.Errorf("severity = %q", a.Labels["severity"])
		}
		if a.GeneratorURL != "http://"+listen+"/metrics" || !strings.HasSuffix(a.Annotations["runbook_url"], "docs/runbooks/EvictionImminent.md") {
			t.Errorf("generatorURL %q annotations %v", a.GeneratorURL, a.Annotations)
		}
		// endsAt is a few resends ahead: a dead daemon's alerts expire on their own.
		if d := time.Until(a.EndsAt); d <= 0 || d > time.Minute {
			t.Errorf("endsAt %s is %s away, want within (0, 1m]", a.EndsAt, d)
		}
	}
	// Re-sent while active: endsAt moves forward.
	first := fired[0].EndsAt
	err = harness.WaitFor(context.Background(), 20*time.Second, p, func() error {
		as, err := activeAlerts(am, "EvictionImminent", "nodefs.available")
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.EndsAt.After(first) {
				return nil
			}
		}
		return errors.New("endsAt not extended yet")
	})
	if err != nil {
		t.Fatalf("active alert not re-sent: %v", err)
	}

	stop()
	sc.Free(t)
	freed := time.Now()
	err = harness.WaitFor(context.Background(), 120*time.Second, p, func() error {
		as, err := activeAlerts(am, "EvictionImminent", "nodefs.available")
		if err != nil {
			return err
		}
		if len(as) > 0 {
			return fmt.Errorf("still active:\n%s", describeAlerts(as))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("EvictionImminent did not resolve: %v", err)
	}
	if !strings.Contains(p.Log(), "alert resolved") {
		t.Errorf("daemon log does not say the alert was resolved")
	}
	t.Logf("resolved %s after the space was freed; test took %s", time.Since(freed).Round(time.Second), time.Since(start).Round(time.Second))
}
