package config

import (
	"strings"
	"testing"
)

// TestLoadPolicy: a standalone --policy file is decoded like the config's policy section,
// with FILE:LINE errors.
func TestLoadPolicy(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // "" = valid
	}{
		{"empty is the default dry run", "", nil},
		{"migration", "dryRun: false\nmigration:\n  to: /data/docker\n  runtime: docker\n  keepOld: true\n  minFree: 2Gi\n", nil},
		{"unknown key in migration", "migration:\n  to: /data\n  keepold: true\n", []string{`p.yaml:3: unknown key "keepold" (in policy.migration)`}},
		{"invalid values carry their lines", "dryRun: false\nmigration:\n  to: data\n  runtime: crio\n",
			[]string{`p.yaml:3: migration.to: "data" is not an absolute node path`, `p.yaml:4: migration.runtime: "crio": must be auto, docker or containerd`}},
		{"migration keys without to", "migration:\n  keepOld: true\n", []string{"p.yaml:1: migration.to: must be set when other migration keys are"}},
		{"signals", "signals: [memory.available]\n", []string{"p.yaml:1: signals[0]: memory.available needs allowMemoryAndPID: true"}},
		{"two documents", "dryRun: true\n---\ndryRun: false\n", []string{"p.yaml:2: more than one YAML document"}},
		{"wrong type", "cooldown: [1h]\n", []string{"p.yaml:1:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := LoadPolicy("p.yaml", []byte(tc.yaml))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if p.Migration.Enabled() && p.Migration.LockTTL.Duration == 0 {
					t.Errorf("migration defaults not applied: %+v", p.Migration)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
