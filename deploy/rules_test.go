package deploy

import (
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
	readmeSections     = "../README.md"
	runbookBase        = "https://github.com/evictguard/evictguard/blob/main/README.md#alert-"
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

// TestAlertsDocumented: every alert has a summary, a description and a runbook_url pointing
// at its README anchor, and README.md has that anchor.
func TestAlertsDocumented(t *testing.T) {
	var plain ruleGroups
	readYAML(t, rulesFile, &plain)
	readme, err := os.ReadFile(readmeSections)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range plain.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, k)
				}
			}
			if want := runbookBase + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url = %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			switch r.Labels["severity"] {
			case "warning", "critical", "info":
			default:
				t.Errorf("alert %s: severity %q", r.Alert, r.Labels["severity"])
			}
			if seen[r.Alert] {
				continue
			}
			seen[r.Alert] = true
			heading := regexp.MustCompile(`(?m)^### alert-` + strings.ToLower(r.Alert) + `\s*$`)
			if !heading.Match(readme) {
				t.Errorf("%s: no \"### alert-%s\" section", readmeSections, strings.ToLower(r.Alert))
			}
		}
	}
	for _, name := range []string{"EvictionImminent", "EvictionThresholdBreached", "EvictionThresholdsMismatch",
		"RemediationFailed", "RemediationBlocked", "EvictguardDown", "EvictguardStale"} {
		if !seen[name] {
			t.Errorf("alert %s missing from %s", name, rulesFile)
		}
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
