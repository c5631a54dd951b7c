package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValidateAndRoundTrip(t *testing.T) {
	b, err := Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load("defaults.yaml", b)
	if err != nil {
		t.Fatalf("the printed defaults do not load: %v\n%s", err, b)
	}
	if !c.Present("policy.dryRun") || c.Present("policy.lock") {
		t.Errorf("Present: policy.dryRun %v, policy.lock %v", c.Present("policy.dryRun"), c.Present("policy.lock"))
	}
	c.present = nil
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("round trip changed the defaults:\n got %+v\nwant %+v", c, Default())
	}
}

func TestMinimalFileGetsDefaults(t *testing.T) {
	c, err := Load("min.yaml", []byte("apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Monitor.Interval.Duration != time.Second || c.Metrics.Listen != DefaultListen || !c.Policy.Dry() {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestExplicitZeroSurvivesDefaults(t *testing.T) {
	c, err := Load("z.yaml", []byte(`apiVersion: evictguard.dev/v1alpha1
kind: EvictguardConfiguration
metrics:
  listen: ""
alerts:
  for: 0s
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "" || c.Alerts.For.Duration != 0 {
		t.Errorf("explicit zero overwritten: listen=%q for=%v", c.Metrics.Listen, c.Alerts.For)
	}
}

func TestInvalidConfigsNameFileAndLine(t *testing.T) {
	const head = "apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error, the first being FILE:LINE
	}{
		{"unknown top-level key", head + "monitr:\n  interval: 1s\n", []string{"c.yaml:3: ", `unknown key "monitr"`, "top level"}},
		{"unknown nested key", head + "monitor:\n  interval: 1s\n  intervall: 2s\n", []string{"c.yaml:5: ", `unknown key "intervall"`, "(in monitor)"}},
		{"unknown key in policy", head + "policy:\n  dryRun: true\n  floors: {percent: 5}\n", []string{"c.yaml:5: ", `unknown key "floors"`, "policy"}},
		{"unknown key in window", head + "policy:\n  windows:\n  - start: \"01:00\"\n    end: \"02:00\"\n    tz: UTC\n", []string{"c.yaml:7: ", `unknown key "tz"`}},
		{"duplicate key", head + "monitor:\n  interval: 1s\n  interval: 2s\n", []string{"c.yaml:5: ", "already defined"}},
		{"syntax error", head + "monitor:\n  interval: [1s\n", []string{"c.yaml:"}},
		{"bad duration", head + "monitor:\n  interval: fast\n", []string{"c.yaml:4: ", "fast"}},
		{"wrong apiVersion", "apiVersion: v1\nkind: EvictguardConfiguration\n", []string{"c.yaml:1: ", "apiVersion: must be"}},
		{"missing kind", "apiVersion: evictguard.dev/v1alpha1\n", []string{"c.yaml: kind: must be"}},
		{"negative interval", head + "monitor:\n  interval: -1s\n", []string{"c.yaml:4: ", "monitor.interval: must be positive"}},
		{"margin out of range", head + "monitor:\n  warnMargin: 1.5\n", []string{"c.yaml:4: ", "monitor.warnMargin"}},
		{"bad runtime", head + "monitor:\n  runtime: podman\n", []string{"c.yaml:4: ", "podman"}},
		{"relative log dir", head + "monitor:\n  logDirs:\n  - /var/log\n  - fluentd\n", []string{"c.yaml:6: ", "monitor.logDirs[1]"}},
		{"critical beyond warn horizon", head + "monitor:\n  warnHorizon: 5m\nalerts:\n  criticalHorizon: 10m\n", []string{"c.yaml:6: ", "alerts.criticalHorizon", "monitor.warnHorizon"}},
		{"token without url", head + "monitor:\n  configz:\n    tokenFile: /t\n", []string{"c.yaml:5: ", "monitor.configz.tokenFile"}},
		{"bad alertmanager url", head + "alerts:\n  alertmanagerURLs: [\"am:9093\"]\n", []string{"c.yaml:4: ", "alerts.alertmanagerURLs[0]"}},
		{"bad listen", head + "metrics:\n  listen: localhost\n", []string{"c.yaml:4: ", "metrics.listen"}},
		{"policy rule (signal)", head + "policy:\n  signals:\n  - memory.available\n", []string{"c.yaml:5: ", "policy.signals[0]", "allowMemoryAndPID"}},
		{"policy rule (window)", head + "policy:\n  windows:\n  - start: \"25:00\"\n    end: \"02:00\"\n", []string{"c.yaml:5: ", "policy.windows[0].start"}},
		{"policy cross-field", head + "policy:\n  blockers:\n    alertMatchers: ['alertname=\"X\"']\n", []string{"c.yaml:4: ", "policy.blockers"}},
		{"two documents", head + "---\n" + head, []string{"c.yaml:3: ", "more than one"}},
		{"empty", "", []string{"c.yaml: empty file"}},
		{"not a mapping", "- a\n- b\n", []string{"c.yaml:1: ", "not a YAML mapping"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error for\n%s", tt.yaml)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.want[0]) {
				t.Errorf("error %q does not start with %q", msg, tt.want[0])
			}
			for _, w := range tt.want[1:] {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// TestTagsAgree: every field's json and yaml names are the same, so the schema reads the
// same in both encodings (remediate.Policy included).
func TestTagsAgree(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] || ty == reflect.TypeFor[Duration]() {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			if !f.IsExported() {
				continue
			}
			j, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			y, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if j == "" || j != y {
				t.Errorf("%s.%s: json %q, yaml %q", path, f.Name, j, y)
			}
			walk(f.Type, path+"."+j)
		}
	}
	walk(reflect.TypeFor[Configuration](), "")
}
