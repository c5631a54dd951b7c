package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestAlertsPrometheusEvictionImminent: a real Prometheus scrapes a real `evictguard run` and
// evaluates the shipped rules file unchanged; a writer fills the tmpfs nodefs at a steady
// rate. EvictionImminent must be active in a real Alertmanager before the threshold is
// crossed, and resolve after the space is freed.
func TestAlertsPrometheusEvictionImminent(t *testing.T) {
	t.Parallel()
	harness.RequireRoot(t)
	start := time.Now()
	rules, err := os.ReadFile("../deploy/prometheus/evictguard-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	am := harness.StartAlertmanager(t, "")
	// 30 MiB to the threshold at 256 KiB/s: about 2 minutes, well inside the 10 minute
	// critical horizon; the rules' `for: 1m` plus the daemon's first fit take about 70 s.
	sc := newFillScenario(t, 120*time.Second, 256<<10)
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	startDaemon(t, "evictguard", sc.Args(listen)...)
	prom := harness.StartPrometheus(t,
		harness.PrometheusConfig("1s", []string{listen}, []string{"evictguard-rules.yaml"}, []string{am.HostPort()}),
		map[string]string{"evictguard-rules.yaml": string(rules)})

	stop := sc.StartWriter(t)
	fillStart := time.Now()
	var fired []amAlert
	err = harness.WaitFor(context.Background(), 150*time.Second, prom.Proc, func() error {
		as, err := activeAlerts(am, "EvictionImminent", "nodefs.available")
		if err != nil {
			return err
		}
		if len(as) == 0 {
			if sc.Available(t) < sc.Threshold {
				return errors.New("threshold crossed before the alert arrived")
			}
			return errors.New("no EvictionImminent alert yet")
		}
		fired = as
		return nil
	})
	if err != nil {
		t.Fatalf("EvictionImminent did not arrive in Alertmanager: %v", err)
	}
	avail := sc.Available(t)
	t.Logf("EvictionImminent in Alertmanager %s after the writer started, %.1f MiB above the threshold:\n%s",
		time.Since(fillStart).Round(time.Second), float64(avail-sc.Threshold)/(1<<20), describeAlerts(fired))
	if avail <= sc.Threshold {
		t.Fatalf("alert arrived only after the threshold was crossed (available %d, threshold %d)", avail, sc.Threshold)
	}
	var sawWarning bool
	for _, a := range fired {
		if a.Labels["job"] != "evictguard" || a.Labels["kind"] != "hard" || a.Labels["role"] != "nodefs" {
			t.Errorf("alert labels = %v", a.Labels)
		}
		if !strings.HasSuffix(a.Annotations["runbook_url"], "docs/runbooks/EvictionImminent.md") || a.Annotations["summary"] == "" {
			t.Errorf("alert annotations = %v", a.Annotations)
		}
		sawWarning = sawWarning || a.Labels["severity"] == "warning"
	}
	if !sawWarning {
		t.Errorf("no warning-severity EvictionImminent:\n%s", describeAlerts(fired))
	}

	stop()
	sc.Free(t)
	freed := time.Now()
	err = harness.WaitFor(context.Background(), 150*time.Second, prom.Proc, func() error {
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
		t.Fatalf("EvictionImminent did not resolve after space was freed: %v", err)
	}
	t.Logf("resolved %s after the space was freed; test took %s", time.Since(freed).Round(time.Second), time.Since(start).Round(time.Second))
}
