package harness

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// Prometheus is a running Prometheus server on loopback.
type Prometheus struct {
	Dir, URL, ConfigPath string
	Proc                 *Process
}

// StartPrometheus starts Debian's prometheus with the given configuration (use
// PrometheusConfig for a simple one) and waits for /-/ready.
func StartPrometheus(t testing.TB, config string, ruleFiles map[string]string) *Prometheus {
	t.Helper()
	RequireRoot(t)
	bin := Binary(t, "prometheus", "prometheus")
	dir := TempDir(t, "prometheus")
	p := &Prometheus{Dir: dir, URL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)), ConfigPath: filepath.Join(dir, "prometheus.yml")}
	for name, content := range ruleFiles {
		mustWrite(t, filepath.Join(dir, name), content, 0o644)
	}
	mustWrite(t, p.ConfigPath, config, 0o644)
	p.Proc = Start(t, dir, "prometheus", nil, bin, "--config.file="+p.ConfigPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+p.URL[len("http://"):],
		"--web.enable-lifecycle", "--log.level=warn")
	waitHTTP200(t, p.Proc, p.URL+"/-/ready", 60*time.Second)
	return p
}

// PrometheusConfig renders a configuration scraping targets every interval, evaluating the
// rule files (relative to the config) and sending alerts to alertmanagers (host:port).
func PrometheusConfig(interval string, targets []string, ruleFiles []string, alertmanagers []string) string {
	cfg := fmt.Sprintf("global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", interval, interval)
	if len(ruleFiles) > 0 {
		cfg += "rule_files:\n"
		for _, r := range ruleFiles {
			cfg += fmt.Sprintf("  - %q\n", r)
		}
	}
	if len(alertmanagers) > 0 {
		cfg += "alerting:\n  alertmanagers:\n  - static_configs:\n    - targets:\n"
		for _, a := range alertmanagers {
			cfg += fmt.Sprintf("      - %q\n", a)
		}
	}
	cfg += "scrape_configs:\n- job_name: evictguard\n  static_configs:\n  - targets:\n"
	for _, tgt := range targets {
		cfg += fmt.Sprintf("    - %q\n", tgt)
	}
	return cfg
}

// Alertmanager is a running Alertmanager on loopback (clustering off).
type Alertmanager struct {
	Dir, URL, ConfigPath string
	Proc                 *Process
}

// HostPort is the address Prometheus's alerting config wants.
func (a *Alertmanager) HostPort() string { return a.URL[len("http://"):] }

// StartAlertmanager starts Debian's prometheus-alertmanager with config ("" = a null receiver
// that groups fast) and waits for /-/ready.
func StartAlertmanager(t testing.TB, config string) *Alertmanager {
	t.Helper()
	RequireRoot(t)
	bin := Binary(t, "prometheus-alertmanager", "prometheus-alertmanager")
	dir := TempDir(t, "alertmanager")
	if config == "" {
		config = "route:\n  receiver: 'null'\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1m\nreceivers:\n- name: 'null'\n"
	}
	a := &Alertmanager{Dir: dir, URL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)), ConfigPath: filepath.Join(dir, "alertmanager.yml")}
	mustWrite(t, a.ConfigPath, config, 0o644)
	a.Proc = Start(t, dir, "alertmanager", nil, bin, "--config.file="+a.ConfigPath,
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address="+a.HostPort(),
		"--cluster.listen-address=", "--log.level=warn")
	waitHTTP200(t, a.Proc, a.URL+"/-/ready", 60*time.Second)
	return a
}

// waitHTTP200 waits until url answers 200 (over HTTPS, with any certificate: the components'
// self-signed ones), failing with p's log.
func waitHTTP200(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback test components with self-signed certificates
	err := WaitFor(context.Background(), timeout, p, func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s did not become ready: %v\n%s", p.Name, err, p.LogTail(3000))
	}
}
