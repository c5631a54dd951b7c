package journal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evictguard/evictguard/internal/hostfs"
)

func TestJournalWriteAndRestore(t *testing.T) {
	tests := []struct {
		name     string
		existing map[string]string // node path → content before
		writes   [][2]string       // node path, content (in order)
	}{
		{
			name:     "modify an existing file",
			existing: map[string]string{"/etc/systemd/system/kubelet.service.d/10-kubeadm.conf": "[Service]\nA=1\n"},
			writes:   [][2]string{{"/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", "[Service]\nA=2\n"}},
		},
		{
			name:   "create a new file",
			writes: [][2]string{{"/etc/systemd/system/kubelet.service.d/90-evictguard.conf", "[Service]\n"}},
		},
		{
			name:     "write the same file twice keeps the first backup",
			existing: map[string]string{"/etc/docker/daemon.json": `{"graph":"/data/docker"}`},
			writes:   [][2]string{{"/etc/docker/daemon.json", `{"data-root":"/x"}`}, {"/etc/docker/daemon.json", `{"data-root":"/y"}`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := hostfs.Root(t.TempDir())
			for p, c := range tt.existing {
				mustWriteFile(t, root.Path(p), c)
			}
			j, err := Open(root, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			op, err := j.Begin("test", map[string]any{"k": "v"})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.writes {
				if err := j.WriteFile(op, w[0], []byte(w[1]), 0o644); err != nil {
					t.Fatal(err)
				}
				if st := j.FileState(op.Files[len(op.Files)-1]); st != "after" {
					t.Errorf("FileState after write = %s, want after", st)
				}
			}
			// A fresh journal (as after a crash) sees the operation as unfinished.
			j2, _ := Open(root, "", nil)
			unfinished, err := j2.Unfinished()
			if err != nil || len(unfinished) != 1 || unfinished[0].ID != op.ID {
				t.Fatalf("Unfinished = %v, %v; want [%s]", unfinished, err, op.ID)
			}
			if err := j2.RestoreFiles(unfinished[0]); err != nil {
				t.Fatal(err)
			}
			if err := j2.RestoreFiles(unfinished[0]); err != nil {
				t.Fatalf("second restore (idempotent): %v", err)
			}
			for _, w := range tt.writes {
				want, existed := tt.existing[w[0]]
				got, err := os.ReadFile(root.Path(w[0]))
				if !existed {
					if !os.IsNotExist(err) {
						t.Errorf("%s should be gone after restore, err=%v", w[0], err)
					}
					continue
				}
				if string(got) != want {
					t.Errorf("%s after restore = %q, want %q", w[0], got, want)
				}
			}
			if err := j2.Finish(unfinished[0], StateRolledBack, "test"); err != nil {
				t.Fatal(err)
			}
			if u, _ := j2.Unfinished(); len(u) != 0 {
				t.Errorf("still unfinished after Finish: %v", u)
			}
		})
	}
}

func TestJournalRefusesTamperedBackup(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	mustWriteFile(t, root.Path("/etc/f"), "orig")
	j, _ := Open(root, "", nil)
	op, _ := j.Begin("test", nil)
	if err := j.WriteFile(op, "/etc/f", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustWriteFile(t, root.Path(op.Files[0].Backup), "tampered")
	err := j.RestoreFiles(op)
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("RestoreFiles with a tampered backup: err = %v, want checksum error", err)
	}
	if b, _ := os.ReadFile(root.Path("/etc/f")); string(b) != "new" {
		t.Errorf("file changed despite refusal: %q", b)
	}
}

func TestFailedOperationsNeedClearing(t *testing.T) {
	j, _ := Open(hostfs.Root(t.TempDir()), "", nil)
	op, _ := j.Begin("test", nil)
	if err := j.Finish(op, StateFailed, "rollback failed"); err != nil {
		t.Fatal(err)
	}
	if f, _ := j.Failed(); len(f) != 1 {
		t.Fatalf("Failed = %v", f)
	}
	if err := j.Clear(op.ID, "fixed by hand"); err != nil {
		t.Fatal(err)
	}
	if f, _ := j.Failed(); len(f) != 0 {
		t.Fatalf("Failed after Clear = %v", f)
	}
}

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name          string
		before, after []byte
		want          []string
	}{
		{"change", []byte("a\nb\n"), []byte("a\nc\n"), []string{"--- a/etc/x", "+++ b/etc/x", "-b", "+c"}},
		{"new file", nil, []byte("x\n"), []string{"--- /dev/null", "+x"}},
		{"no change", []byte("a\n"), []byte("a\n"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := UnifiedDiff("/etc/x", tt.before, tt.after)
			if tt.want == nil && got != "" {
				t.Errorf("diff of equal content = %q, want empty", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("diff lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func mustWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenJournalWritesNothing(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(hostfs.Root(dir), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ops, err := j.Unfinished(); err != nil || len(ops) != 0 {
		t.Fatalf("Unfinished on an empty state dir = %v, %v", ops, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("OpenJournal/Unfinished created %d entries; a read must not write", len(entries))
	}
}
