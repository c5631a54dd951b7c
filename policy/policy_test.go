package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// errorText is the errors as a configuration file reports them: "field: detail" per line.
func errorText(errs field.ErrorList) string {
	lines := make([]string, 0, len(errs))
	for _, e := range errs {
		lines = append(lines, e.Field+": "+e.Detail)
	}
	return strings.Join(lines, "\n")
}

func TestPolicyValidate(t *testing.T) {
	cases := []struct {
		name, json, want string
	}{
		{name: "defaults", json: `{}`},
		{name: "memory needs allow", json: `{"signals":["memory.available"]}`, want: "allowMemoryAndPID"},
		{name: "bad zone", json: `{"windows":[{"start":"01:00","end":"02:00","timeZone":"Mars/Base"}]}`, want: "timeZone"},
		{name: "bad clock", json: `{"windows":[{"start":"25:00","end":"02:00"}]}`, want: "start"},
		{name: "bad day", json: `{"windows":[{"days":["Funday"],"start":"01:00","end":"02:00"}]}`, want: "days"},
		{name: "matchers without URL", json: `{"blockers":{"alertMatchers":["a=\"b\""]}}`, want: "go together"},
		{name: "bad selector", json: `{"blockers":{"podSelector":"a in ("}}`, want: "podSelector"},
		{name: "bad duration", json: `{"cooldown":"soon"}`, want: "invalid"},
		{name: "bad method", json: `{"writeMethod":"sed"}`, want: "writeMethod"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p Policy
			dec := json.NewDecoder(strings.NewReader(tc.json))
			dec.DisallowUnknownFields()
			err := dec.Decode(&p)
			if err == nil {
				p.ApplyDefaults()
				if text := errorText(p.Validate()); text != "" {
					err = errors.New(text)
				}
			}
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestMigrationPolicyValidate: the migration section's rules.
func TestMigrationPolicyValidate(t *testing.T) {
	cases := []struct {
		name string
		m    MigrationPolicy
		want string // "" = valid
	}{
		{"disabled", MigrationPolicy{}, ""},
		{"minimal", MigrationPolicy{To: "/data/docker"}, ""},
		{"full", MigrationPolicy{To: "/data/docker", Runtime: "docker", Config: "/etc/docker/daemon.json", Units: []string{"docker.service"},
			Drain: true, KeepOld: true, MinFree: "2Gi"}, ""},
		{"percent margin", MigrationPolicy{To: "/data/c", Runtime: "containerd", MinFree: "15%"}, ""},
		{"keys without to", MigrationPolicy{KeepOld: true}, "migration.to: must be set when other migration keys are"},
		{"relative to", MigrationPolicy{To: "data"}, `migration.to: "data" is not an absolute node path`},
		{"root", MigrationPolicy{To: "/"}, "migration.to: must not be /"},
		{"unclean", MigrationPolicy{To: "/data/../x/"}, "is not a clean path"},
		{"crio", MigrationPolicy{To: "/data/x", Runtime: "crio"}, `migration.runtime: "crio": must be auto, docker or containerd`},
		{"bad margin", MigrationPolicy{To: "/data/x", MinFree: "lots"}, "migration.minFree:"},
		{"negative margin", MigrationPolicy{To: "/data/x", MinFree: "-1Gi"}, "migration.minFree:"},
		{"bad unit", MigrationPolicy{To: "/data/x", Units: []string{"docker"}}, `migration.units[0]: "docker" is not a .service or .socket unit`},
		{"relative config", MigrationPolicy{To: "/data/x", Config: "daemon.json"}, "migration.config:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &Policy{Migration: tc.m}
			p.ApplyDefaults()
			err := errorText(p.Validate())
			if tc.want == "" {
				if err != "" {
					t.Fatalf("unexpected error: %s", err)
				}
				return
			}
			if !strings.Contains(err, tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

func TestMigrationPolicyMargin(t *testing.T) {
	cases := []struct {
		in      string
		bytes   int64
		percent float64
	}{
		{"", 0, 0},
		{"2Gi", 2 << 30, 0},
		{"0", 1, 0},
		{"10%", 1, 10},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			m := MigrationPolicy{To: "/x", MinFree: tc.in}
			b, p, err := m.Margin()
			if err != nil || b != tc.bytes || p != tc.percent {
				t.Errorf("Margin(%q) = %d, %v, %v; want %d, %v", tc.in, b, p, err, tc.bytes, tc.percent)
			}
		})
	}
}
