package reclaim

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBudgetPublisherSetFile: a reload's new file gets the budget at the next Update even
// though the budget did not change, and "" stops the files.
func TestBudgetPublisherSetFile(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a", "budget.env"), filepath.Join(dir, "b", "budget.env")
	p, err := NewBudgetPublisher(BudgetPublisherConfig{File: first})
	if err != nil {
		t.Fatal(err)
	}
	budgets := ComputeLogBudgets(budgetSnapshot(2<<30, 8<<30, 2), BudgetConfig{MarginBytes: 100 << 20})
	tests := []struct {
		name      string
		file      string // "-": no SetFile
		published bool
		exists    string
	}{
		{"first publication", "-", true, first},
		{"unchanged budget: nothing written", "-", false, ""},
		{"same file again: nothing written", first, false, ""},
		{"new file: written at once", second, true, second},
		{"no file: the annotation only", "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.file != "-" {
				p.SetFile(tt.file)
				if p.File() != tt.file {
					t.Errorf("File() = %q, want %q", p.File(), tt.file)
				}
			}
			published, err := p.Update(t.Context(), budgets)
			if err != nil {
				t.Fatal(err)
			}
			if published != tt.published {
				t.Errorf("published %v, want %v", published, tt.published)
			}
			if tt.exists != "" {
				if _, err := os.Stat(tt.exists); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
