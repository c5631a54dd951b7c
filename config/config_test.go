package config

import (
	"fmt"
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

// TestLogsAndReclaimDefaults: explicit zeros survive, the ballast follows the state dir, and
// a complete section loads.
func TestLogsAndReclaimDefaults(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(*Configuration) string
	}{
		{"defaults", "", func(c *Configuration) string {
			if c.Monitor.RediscoverInterval.Duration != time.Minute {
				return fmt.Sprintf("rediscoverInterval %v", c.Monitor.RediscoverInterval)
			}
			r := c.Actions.Reclaim
			if c.Logs.Budget.Margin != "5%" || r.Horizon.Duration != 30*time.Minute || r.GC.KeepExited != 5 ||
				r.RotatedLogs.MinAge.Duration != time.Hour || r.Ballast.Path != "/var/lib/evictguard/ballast" || len(r.Allow) != 0 ||
				c.Monitor.Hysteresis.ExitBand != 0.25 || c.Monitor.Hysteresis.BreachHold.Duration != 30*time.Second {
				return fmt.Sprintf("%+v %+v %+v", c.Logs, r, c.Monitor.Hysteresis)
			}
			return ""
		}},
		{"rediscovery off", "monitor:\n  rediscoverInterval: 0s\n", func(c *Configuration) string {
			if d := c.Monitor.RediscoverInterval.Duration; d != 0 {
				return fmt.Sprintf("rediscoverInterval %v, want the explicit 0s", d)
			}
			return ""
		}},
		{"explicit zeros", "monitor:\n  hysteresis:\n    breachHold: 0s\nactions:\n  reclaim:\n    gc:\n      keepExited: 0\n    rotatedLogs:\n      minAge: 0s\n", func(c *Configuration) string {
			r := c.Actions.Reclaim
			if r.GC.KeepExited != 0 || r.RotatedLogs.MinAge.Duration != 0 || c.Monitor.Hysteresis.BreachHold.Duration != 0 {
				return fmt.Sprintf("%+v %+v", r, c.Monitor.Hysteresis)
			}
			return ""
		}},
		{"ballast follows stateDir", "actions:\n  stateDir: /srv/evictguard/\n", func(c *Configuration) string {
			if p := c.Actions.Reclaim.Ballast.Path; p != "/srv/evictguard/ballast" {
				return p
			}
			return ""
		}},
		{"complete", `logs:
  budget:
    file: /var/lib/evictguard/log-budget.env
    margin: 512Mi
actions:
  reclaim:
    allow: [ballast, gc, logs, escalate]
    dryRun: true
    horizon: 45m
    lowHeadroom: 1Gi
    ballast: {size: 1Gi, path: /var/lib/ballast}
    gc: {keepExited: 2, keepImages: [registry.k8s.io/pause:3.10]}
    rotatedLogs: {minAge: 10m, posFiles: [/var/log/fluentd-containers.log.pos]}
`, func(c *Configuration) string {
			r := c.Actions.Reclaim
			if _, n, _ := ParseMargin(c.Logs.Budget.Margin); n != 512<<20 || len(r.Allow) != 4 || !r.DryRun ||
				r.Horizon.Duration != 45*time.Minute || r.Ballast.Path != "/var/lib/ballast" || r.GC.KeepExited != 2 {
				return fmt.Sprintf("%+v %+v", c.Logs, r)
			}
			return ""
		}},
	}
	const head = "apiVersion: evictguard.dev/v1alpha1\nkind: EvictguardConfiguration\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("c.yaml", []byte(head+tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c); msg != "" {
				t.Errorf("unexpected values: %s", msg)
			}
		})
	}
}

func TestParseMargin(t *testing.T) {
	tests := []struct {
		in      string
		percent float64
		bytes   int64
		ok      bool
	}{
		{"5%", 5, 0, true},
		{"0.5%", 0.5, 0, true},
		{"512Mi", 0, 512 << 20, true},
		{"0", 0, 0, true},
		{"100%", 0, 0, false},
		{"-1%", 0, 0, false},
		{"x%", 0, 0, false},
		{"-1Gi", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, b, err := ParseMargin(tt.in)
			if (err == nil) != tt.ok || p != tt.percent || b != tt.bytes {
				t.Errorf("ParseMargin(%q) = %v, %v, %v", tt.in, p, b, err)
			}
		})
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
		{"negative rediscover interval", head + "monitor:\n  rediscoverInterval: -1m\n", []string{"c.yaml:4: ", "monitor.rediscoverInterval: must not be negative"}},
		{"margin out of range", head + "monitor:\n  warnMargin: 1.5\n", []string{"c.yaml:4: ", "monitor.warnMargin"}},
		{"bad runtime", head + "monitor:\n  runtime: podman\n", []string{"c.yaml:4: ", "podman"}},
		{"relative history file", head + "monitor:\n  historyFile: history.json\n", []string{"c.yaml:4: ", "monitor.historyFile: must be an absolute node path"}},
		{"unknown metrics auth", head + "metrics:\n  auth: basic\n", []string{"c.yaml:4: ", "metrics.auth: \"basic\" is not one of none, kubernetes"}},
		{"certificate without key", head + "metrics:\n  tls:\n    certFile: /etc/evictguard/tls.crt\n", []string{"c.yaml:4: ", "metrics.tls: certFile and keyFile go together"}},
		{"relative log dir", head + "monitor:\n  logDirs:\n  - /var/log\n  - fluentd\n", []string{"c.yaml:6: ", "monitor.logDirs[1]"}},
		{"critical beyond warn horizon", head + "monitor:\n  warnHorizon: 5m\nalerts:\n  criticalHorizon: 10m\n", []string{"c.yaml:6: ", "alerts.criticalHorizon", "monitor.warnHorizon"}},
		{"token without url", head + "monitor:\n  configz:\n    tokenFile: /t\n", []string{"c.yaml:5: ", "monitor.configz.tokenFile"}},
		{"bad alertmanager url", head + "alerts:\n  alertmanagerURLs: [\"am:9093\"]\n", []string{"c.yaml:4: ", "alerts.alertmanagerURLs[0]"}},
		{"bad listen", head + "metrics:\n  listen: localhost\n", []string{"c.yaml:4: ", "metrics.listen"}},
		{"policy rule (signal)", head + "policy:\n  signals:\n  - memory.available\n", []string{"c.yaml:5: ", "policy.signals[0]", "allowMemoryAndPID"}},
		{"policy rule (window)", head + "policy:\n  windows:\n  - start: \"25:00\"\n    end: \"02:00\"\n", []string{"c.yaml:5: ", "policy.windows[0].start"}},
		{"policy cross-field", head + "policy:\n  blockers:\n    alertMatchers: ['alertname=\"X\"']\n", []string{"c.yaml:4: ", "policy.blockers"}},
		{"unknown key in reclaim", head + "actions:\n  reclaim:\n    alow: [gc]\n", []string{"c.yaml:5: ", `unknown key "alow"`, "(in actions.reclaim)"}},
		{"unknown key in log budget", head + "logs:\n  budget:\n    margn: 5%\n", []string{"c.yaml:5: ", `unknown key "margn"`, "(in logs.budget)"}},
		{"exit band out of range", head + "monitor:\n  hysteresis:\n    exitBand: 3\n", []string{"c.yaml:5: ", "monitor.hysteresis.exitBand"}},
		{"negative breach hold", head + "monitor:\n  hysteresis:\n    breachHold: -1s\n", []string{"c.yaml:5: ", "monitor.hysteresis.breachHold"}},
		{"bad budget margin", head + "logs:\n  budget:\n    margin: 120%\n", []string{"c.yaml:5: ", "logs.budget.margin", "percentage"}},
		{"bad budget margin quantity", head + "logs:\n  budget:\n    margin: lots\n", []string{"c.yaml:5: ", "logs.budget.margin", "quantity"}},
		{"relative budget file", head + "logs:\n  budget:\n    file: budget.env\n", []string{"c.yaml:5: ", "logs.budget.file"}},
		{"unknown reclaim step", head + "actions:\n  reclaim:\n    allow:\n    - gc\n    - purge\n", []string{"c.yaml:7: ", "actions.reclaim.allow[1]", "purge"}},
		{"duplicate reclaim step", head + "actions:\n  reclaim:\n    allow: [gc, gc]\n", []string{"c.yaml:5: ", "actions.reclaim.allow[1]", "twice"}},
		{"ballast allowed without size", head + "actions:\n  reclaim:\n    allow:\n    - ballast\n", []string{"c.yaml:6: ", "actions.reclaim.allow[0]", "ballast.size"}},
		{"zero reclaim horizon", head + "actions:\n  reclaim:\n    horizon: 0s\n", []string{"c.yaml:5: ", "actions.reclaim.horizon: must be positive"}},
		{"bad low headroom", head + "actions:\n  reclaim:\n    lowHeadroom: -1Gi\n", []string{"c.yaml:5: ", "actions.reclaim.lowHeadroom", "negative"}},
		{"bad ballast size", head + "actions:\n  reclaim:\n    ballast:\n      size: big\n", []string{"c.yaml:6: ", "actions.reclaim.ballast.size"}},
		{"relative ballast path", head + "actions:\n  reclaim:\n    ballast:\n      path: ballast\n", []string{"c.yaml:6: ", "actions.reclaim.ballast.path"}},
		{"negative keep exited", head + "actions:\n  reclaim:\n    gc:\n      keepExited: -1\n", []string{"c.yaml:6: ", "actions.reclaim.gc.keepExited"}},
		{"relative pos file", head + "actions:\n  reclaim:\n    rotatedLogs:\n      posFiles: [fluentd.pos]\n", []string{"c.yaml:6: ", "actions.reclaim.rotatedLogs.posFiles[0]"}},
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
