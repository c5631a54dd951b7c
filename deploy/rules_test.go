package deploy

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/evictguard/evictguard/e2e/harness"
)

const (
	rulesFile          = "prometheus/evictguard-rules.yaml"
	prometheusRuleFile = "kubernetes/prometheusrule.yaml"
	// runbookDir holds one page per alert, docs/runbooks/<Alert>.md; runbookBase is where
	// the rules' runbook_url annotations find it on GitHub.
	runbookDir  = "../docs/runbooks"
	runbookBase = "https://github.com/evictguard/evictguard/blob/main/docs/runbooks/"
)

type ruleGroups struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

type rule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec ruleGroups `json:"spec"`
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestPrometheusRuleInSync: the PrometheusRule carries exactly the groups of the plain rules
// file. EVICTGUARD_UPDATE=1 rewrites the PrometheusRule from the rules file.
func TestPrometheusRuleInSync(t *testing.T) {
	var plain ruleGroups
	readYAML(t, rulesFile, &plain)
	if os.Getenv("EVICTGUARD_UPDATE") == "1" {
		writePrometheusRule(t, plain)
	}
	var pr prometheusRule
	readYAML(t, prometheusRuleFile, &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Errorf("%s: apiVersion/kind = %s/%s", prometheusRuleFile, pr.APIVersion, pr.Kind)
	}
	if !reflect.DeepEqual(plain.Groups, pr.Spec.Groups) {
		t.Errorf("%s and %s have different groups; run EVICTGUARD_UPDATE=1 go test ./deploy -run TestPrometheusRuleInSync", prometheusRuleFile, rulesFile)
	}
}

func writePrometheusRule(t *testing.T, g ruleGroups) {
	t.Helper()
	body, err := yaml.Marshal(map[string]any{"spec": g})
	if err != nil {
		t.Fatal(err)
	}
	head := `# Generated from deploy/prometheus/evictguard-rules.yaml by
#   EVICTGUARD_UPDATE=1 go test ./deploy -run TestPrometheusRuleInSync
# Do not edit the groups here; deploy/rules_test.go fails when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: evictguard
  namespace: evictguard
  labels:
    app.kubernetes.io/name: evictguard
    app.kubernetes.io/component: alerting-rules
`
	if err := os.WriteFile(prometheusRuleFile, append([]byte(head), body...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAlertsDocumented: every alert has a summary, a description, a known severity and a
// runbook_url pointing at its page docs/runbooks/<Alert>.md, which exists and is titled with
// the alert's name.
func TestAlertsDocumented(t *testing.T) {
	var plain ruleGroups
	readYAML(t, rulesFile, &plain)
	seen := map[string]bool{}
	for _, g := range plain.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			t.Run(r.Alert+"/"+r.Labels["severity"], func(t *testing.T) {
				for _, k := range []string{"summary", "description", "runbook_url"} {
					if strings.TrimSpace(r.Annotations[k]) == "" {
						t.Errorf("no %s annotation", k)
					}
				}
				if want := runbookBase + r.Alert + ".md"; r.Annotations["runbook_url"] != want {
					t.Errorf("runbook_url = %q, want %q", r.Annotations["runbook_url"], want)
				}
				switch r.Labels["severity"] {
				case "warning", "critical", "info":
				default:
					t.Errorf("severity %q", r.Labels["severity"])
				}
				page := filepath.Join(runbookDir, r.Alert+".md")
				b, err := os.ReadFile(page)
				if err != nil {
					t.Fatalf("no runbook: %v", err)
				}
				if title := "# " + r.Alert + "\n"; !strings.HasPrefix(string(b), title) {
					t.Errorf("%s does not start with %q", page, title)
				}
			})
			seen[r.Alert] = true
		}
	}
	for _, name := range []string{"EvictionImminent", "EvictionThresholdBreached", "EvictionThresholdsMismatch",
		"EvictionImminentFleet", "RemediationFailed", "RemediationBlocked", "EvictguardDown", "EvictguardStale"} {
		if !seen[name] {
			t.Errorf("alert %s missing from %s", name, rulesFile)
		}
	}

	// The other direction: a runbook without an alert is a page nobody is sent to.
	pages, err := filepath.Glob(filepath.Join(runbookDir, "*"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no runbooks in %s: %v", runbookDir, err)
	}
	for _, p := range pages {
		name := strings.TrimSuffix(filepath.Base(p), ".md")
		if !seen[name] || filepath.Ext(p) != ".md" {
			t.Errorf("%s belongs to no alert in %s", p, rulesFile)
		}
	}
}

// TestRunbookURLsResolve: every runbook_url in deploy/ (the rules, the PrometheusRule, the
// Helm chart's copy and the promtool tests' expected alerts) names the runbook of its own
// alert, so an edited copy cannot point at a page that is not there.
func TestRunbookURLsResolve(t *testing.T) {
	url := regexp.MustCompile(`runbook_url:\s*(\S+)`)
	alert := regexp.MustCompile(`(?:alert|alertname):\s*(\w+)`)
	files := map[string]int{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[path] = len(url.FindAll(b, -1))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{rulesFile, prometheusRuleFile, "helm/evictguard/files/prometheusrule.yaml"} {
		if files[want] == 0 {
			t.Errorf("%s: no runbook_url found", want)
		}
	}
	for path, n := range files {
		if n == 0 {
			continue
		}
		t.Run(path, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Each runbook_url belongs to the nearest alert name above it (a rule's
			// "alert:" or a promtool test's "alertname:").
			last := ""
			for i, line := range strings.Split(string(b), "\n") {
				if m := alert.FindStringSubmatch(line); m != nil {
					last = m[1]
				}
				m := url.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				if want := runbookBase + last + ".md"; m[1] != want {
					t.Errorf("%s:%d: runbook_url %s, want %s", path, i+1, m[1], want)
				}
				if _, err := os.Stat(filepath.Join(runbookDir, last+".md")); err != nil {
					t.Errorf("%s:%d: %v", path, i+1, err)
				}
			}
		})
	}
}

// TestRulesPromtool runs promtool check rules on both files and promtool test rules on the
// unit tests in prometheus/tests.
func TestRulesPromtool(t *testing.T) {
	promtool := harness.Binary(t, "promtool", "prometheus")

	// The PrometheusRule's spec is a rules file too.
	var pr prometheusRule
	readYAML(t, prometheusRuleFile, &pr)
	spec, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	specFile := filepath.Join(t.TempDir(), "prometheusrule-spec.yaml")
	if err := os.WriteFile(specFile, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := filepath.Glob("prometheus/tests/*.yaml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("no rule tests in prometheus/tests: %v", err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"check rules", []string{"check", "rules", rulesFile}},
		{"check PrometheusRule spec", []string{"check", "rules", specFile}},
		{"test rules", append([]string{"test", "rules"}, tests...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(promtool, tc.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
			if !strings.Contains(string(out), "SUCCESS") {
				t.Fatalf("promtool %s:\n%s", strings.Join(tc.args, " "), out)
			}
		})
	}
}
