package migration

import (
	"slices"
	"testing"

	"github.com/evictguard/evictguard/journal"
)

// TestStepNamesAreStable: the step names are persisted in journals on nodes (Operation.Step),
// and a resumption after an upgrade looks them up: they and their order never change
// without a migration of old journals.
func TestStepNamesAreStable(t *testing.T) {
	want := []string{"lease", "cordon", "drain", "precopy", "preverify", "stop", "delta", "verify",
		"config", "start-runtime", "kubelet", "uncordon", "cleanup", "release"}
	if !slices.Equal(Steps, want) {
		t.Errorf("Steps = %q, want %q", Steps, want)
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.run == nil {
				t.Error("no function")
			}
		})
	}
	if journal.KindMigrateDataRoot != "migrate-data-root" || journal.KindThresholdRewrite != "threshold-rewrite" {
		t.Errorf("journal kinds changed: %q, %q", journal.KindMigrateDataRoot, journal.KindThresholdRewrite)
	}
}
