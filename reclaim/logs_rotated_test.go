package reclaim

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIsRotatedLog(t *testing.T) {
	tests := map[string]bool{
		"0123abcd-json.log":        false,
		"0123abcd-json.log.1":      true,
		"0123abcd-json.log.1.gz":   false,
		"0.log":                    false,
		"0.log.20261123-120000":    true,
		"0.log.20261123-120000.gz": false,
		"buffer.b5f3.log":          false,
		"syslog.1":                 false,
	}
	for name, want := range tests {
		if got := IsRotatedLog(name); got != want {
			t.Errorf("IsRotatedLog(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParsePosFile(t *testing.T) {
	in := "/var/log/containers/a.log\t00000000000a1b2c\t0000000000000400\n" +
		"garbage line\n" +
		"/var/log/containers/b.log\tffffffffffffffff\tzz\n" +
		"/var/log/containers/c.log\t0000000000000010\tffffffffffffffff\n"
	got, err := ParsePosFile(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []PosEntry{{"/var/log/containers/a.log", 0xa1b2c, 0x400}, {"/var/log/containers/c.log", 0x10, ^uint64(0)}}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func inode(t *testing.T, p string) uint64 {
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func TestRotatedLogsRespectPositionFiles(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)
	write := func(name string, size int, mtime time.Time) string {
		p := filepath.Join(dir, "containers", "c1", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Repeat("{\"log\":\"hello\"}\n", size/16)), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	active := write("c1-json.log", 4096, old)
	shipped := write("c1-json.log.1", 8192, old)
	partial := write("c1-json.log.2", 8192, old)
	unknown := write("c1-json.log.3", 8192, old)
	young := write("c1-json.log.4", 8192, time.Now())
	pos := filepath.Join(dir, "fluentd-containers.log.pos")
	content := fmt.Sprintf("%s\t%016x\t%016x\n%s\t%016x\t%016x\n%s\t%016x\t%016x\n%s\t%016x\t%016x\n",
		active, inode(t, active), 4096,
		shipped, inode(t, shipped), 8192,
		partial, inode(t, partial), 4000,
		young, inode(t, young), 8192)
	if err := os.WriteFile(pos, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	activeBefore, _ := os.ReadFile(active)
	partialBefore, _ := os.ReadFile(partial)

	tests := []struct {
		name     string
		posFiles []string
		want     []string
	}{
		{"with position files only shipped files", []string{pos}, []string{shipped}},
		{"without position files every old rotated file", nil, []string{shipped, partial, unknown}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &RotatedLogs{Dirs: []string{dir}, MinAge: time.Hour, PosFiles: tc.posFiles}
			c, err := r.Candidates()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range c {
				got = append(got, x.Path)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("candidates = %v, want %v", got, tc.want)
			}
		})
	}

	r := &RotatedLogs{Dirs: []string{dir}, MinAge: time.Hour, PosFiles: []string{pos}}
	c, _ := r.Candidates()
	orig, _ := os.ReadFile(shipped)
	done, err := r.Reclaim(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0].Bytes <= 0 {
		t.Fatalf("done = %+v", done)
	}
	if _, err := os.Stat(shipped); !os.IsNotExist(err) {
		t.Errorf("original still there: %v", err)
	}
	f, err := os.Open(shipped + ".gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(zr)
	if err != nil || string(back) != string(orig) {
		t.Errorf("gzip round trip differs (err %v)", err)
	}
	if b, _ := os.ReadFile(active); string(b) != string(activeBefore) {
		t.Error("active file changed")
	}
	if b, _ := os.ReadFile(partial); string(b) != string(partialBefore) {
		t.Error("partly shipped file changed")
	}
}

func TestRotatedLogsTruncate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "0.log.20261123-120000")
	if err := os.WriteFile(p, make([]byte, 10000), 0o640); err != nil {
		t.Fatal(err)
	}
	r := &RotatedLogs{Dirs: []string{dir}, Mode: LogModeTruncate}
	c, err := r.Candidates()
	if err != nil || len(c) != 1 {
		t.Fatalf("candidates %v %v", c, err)
	}
	done, err := r.Reclaim(c)
	if err != nil || len(done) != 1 || done[0].Bytes != 10000 {
		t.Fatalf("done %+v %v", done, err)
	}
	if st, _ := os.Stat(p); st.Size() != 0 {
		t.Errorf("size %d after truncate", st.Size())
	}
}
