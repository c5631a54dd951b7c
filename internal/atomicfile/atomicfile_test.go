package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name     string
		existing *string
		perm     os.FileMode
		wantPerm os.FileMode
	}{
		{name: "new file uses perm", perm: 0o640, wantPerm: 0o640},
		{name: "existing file keeps its mode", existing: ptr("old"), perm: 0o600, wantPerm: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f.conf")
			if tt.existing != nil {
				if err := os.WriteFile(p, []byte(*tt.existing), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(p, []byte("new"), tt.perm); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			b, err := os.ReadFile(p)
			if err != nil || string(b) != "new" {
				t.Fatalf("content = %q, %v; want %q", b, err, "new")
			}
			st, _ := os.Stat(p)
			if st.Mode().Perm() != tt.wantPerm {
				t.Errorf("mode = %v, want %v", st.Mode().Perm(), tt.wantPerm)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("directory has %d entries, want 1 (temporary file left behind?)", len(entries))
			}
		})
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	err := WriteFile(filepath.Join(t.TempDir(), "nope", "f"), []byte("x"), 0o644)
	if err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
}

func ptr(s string) *string { return &s }
