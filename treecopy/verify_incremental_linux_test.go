package treecopy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/treecopy/treecopytest"
)

// agePastSlack waits until every ctime stamped so far is older than a time.Now() taken
// afterwards, less CtimeSlack.
func agePastSlack() { time.Sleep(CtimeSlack + 100*time.Millisecond) }

// treePairs is treecopytest.TreePairs aged past the slack.
func treePairs(t *testing.T, n int) (srcs, dsts []string) {
	t.Helper()
	return treecopytest.TreePairs(t, n, CtimeSlack+100*time.Millisecond)
}

// overwriteKeepingStatus changes p's first bytes and puts its mtime back: only its contents
// (and ctime) tell.
func overwriteKeepingStatus(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	mustDo(t, unix.Lstat(p, &st))
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	mustDo(t, err)
	_, err = f.WriteAt([]byte("LOG"), 0)
	mustDo(t, err, f.Close(), unix.UtimesNano(p, []unix.Timespec{st.Atim, st.Mtim}))
}

func mustDo(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyTreesLive: while the source is in use, what changed after the copy began is
// left for later — however it changed — and a difference in anything else is a fault of the
// copy, found before the runtime is stopped.
func TestVerifyTreesLive(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		mutate      func(t *testing.T, src, dst string)
		checksums   bool
		wantChanged bool   // the source changed: counted, not a difference
		wantDiff    string // a fault of the copy
	}{
		{name: "nothing changed"},
		{name: "log appended", wantChanged: true, mutate: func(t *testing.T, src, _ string) {
			f, err := os.OpenFile(filepath.Join(src, "containers/c1/c1-json.log"), os.O_APPEND|os.O_WRONLY, 0)
			mustDo(t, err)
			_, err = f.WriteString("more\n")
			mustDo(t, err, f.Close())
		}},
		{name: "files added, removed, renamed", wantChanged: true, mutate: func(t *testing.T, src, _ string) {
			mustDo(t, os.WriteFile(filepath.Join(src, "containers/c1/new"), []byte("x"), 0o644),
				os.Remove(filepath.Join(src, "image/dangling")),
				os.Rename(filepath.Join(src, "image/rel-link"), filepath.Join(src, "image/rel-link2")),
				os.MkdirAll(filepath.Join(src, "containers/c2/sub"), 0o755),
				os.WriteFile(filepath.Join(src, "containers/c2/sub/f"), []byte("y"), 0o644))
		}},
		{name: "mode, xattr and a new hard link", wantChanged: true, mutate: func(t *testing.T, src, _ string) {
			mustDo(t, os.Chmod(filepath.Join(src, "volumes/v1/_data/hello"), 0o666),
				unix.Setxattr(filepath.Join(src, "containers/c1/c1-json.log"), "user.new", []byte("1"), 0),
				os.Link(filepath.Join(src, "image/layers/a/etc/passwd"), filepath.Join(src, "passwd.link3")))
		}},
		{name: "copy fault: mode", wantDiff: "volumes/v1/_data/hello: mode", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, os.Chmod(filepath.Join(dst, "volumes/v1/_data/hello"), 0o666))
		}},
		{name: "copy fault: xattr", wantDiff: "xattr user.evictguard", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, unix.Removexattr(filepath.Join(dst, "volumes/v1/_data/hello"), "user.evictguard"))
		}},
		{name: "copy fault: missing", wantDiff: "image/dangling: missing", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, os.Remove(filepath.Join(dst, "image/dangling")))
		}},
		{name: "copy fault: extra", wantDiff: "image/extra: only in the copy", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, os.WriteFile(filepath.Join(dst, "image/extra"), nil, 0o644))
		}},
		{name: "copy fault: content", checksums: true, wantDiff: "c1-json.log: content differs", mutate: func(t *testing.T, _, dst string) {
			overwriteKeepingStatus(t, filepath.Join(dst, "containers/c1/c1-json.log"))
		}},
		{name: "source changed and copy fault elsewhere", wantChanged: true, wantDiff: "volumes/v1/_data: mode", mutate: func(t *testing.T, src, dst string) {
			mustDo(t, os.WriteFile(filepath.Join(src, "containers/c1/new"), []byte("x"), 0o644),
				os.Chmod(filepath.Join(dst, "volumes/v1/_data"), 0o700))
		}},
	}
	srcs, dsts := treePairs(t, len(tests))
	copied := time.Now()
	for i := range tests {
		if _, err := Copy(ctx, srcs[i], dsts[i], Options{Delete: true}); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.mutate != nil {
				tc.mutate(t, srcs[i], dsts[i])
			}
			st, err := Verify(ctx, srcs[i], dsts[i], VerifyOptions{Live: true, CopiedSince: copied, Checksums: tc.checksums})
			if tc.wantDiff == "" && err != nil {
				t.Fatalf("live verification: %v", err)
			}
			if tc.wantDiff != "" && (!errors.Is(err, ErrTreesDiffer) || !strings.Contains(err.Error(), tc.wantDiff) || !strings.Contains(err.Error(), "fault of the copy")) {
				t.Fatalf("live verification: %v, want a fault of the copy mentioning %q", err, tc.wantDiff)
			}
			if got := st.Changed > 0; got != tc.wantChanged {
				t.Errorf("changed entries %d, want some: %t", st.Changed, tc.wantChanged)
			}
			if st.Entries == 0 || st.StatOnly != 0 {
				t.Errorf("stats %+v: want entries compared in full", st)
			}
		})
	}
}

// TestVerifyTreesAfterLive: the verification after the stop compares only the status of what
// changed on neither side since the live verification — and still finds every difference
// that a change since can make, on either side.
func TestVerifyTreesAfterLive(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		mutate    func(t *testing.T, src, dst string) // after the delta pass
		checksums bool
		wantDiff  string
	}{
		{name: "nothing else changed"},
		{name: "copy changed: mode", wantDiff: "volumes/v1/_data/hello: mode", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, os.Chmod(filepath.Join(dst, "volumes/v1/_data/hello"), 0o666))
		}},
		{name: "copy changed: xattr", wantDiff: "xattr user.evictguard", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, unix.Removexattr(filepath.Join(dst, "volumes/v1/_data/hello"), "user.evictguard"))
		}},
		{name: "copy changed: extra entry", wantDiff: "image/layers/a/extra: only in the copy", mutate: func(t *testing.T, _, dst string) {
			mustDo(t, os.WriteFile(filepath.Join(dst, "image/layers/a/extra"), nil, 0o644))
		}},
		{name: "copy changed: symlink target", wantDiff: "image/rel-link: symlink target", mutate: func(t *testing.T, _, dst string) {
			p := filepath.Join(dst, "image/rel-link")
			var st unix.Stat_t
			mustDo(t, unix.Lstat(p, &st), os.Remove(p), os.Symlink("../elsewhere/hello", p))
			mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
		}},
		{name: "copy changed: content, same size and mtime", checksums: true, wantDiff: "c1-json.log: content differs", mutate: func(t *testing.T, _, dst string) {
			overwriteKeepingStatus(t, filepath.Join(dst, "containers/c1/c1-json.log"))
		}},
		{name: "source changed after the delta", wantDiff: "volumes/v1/_data/hello: size", mutate: func(t *testing.T, src, _ string) {
			f, err := os.OpenFile(filepath.Join(src, "volumes/v1/_data/hello"), os.O_APPEND|os.O_WRONLY, 0)
			mustDo(t, err)
			_, err = f.WriteString("!")
			mustDo(t, err, f.Close())
		}},
		{name: "source xattr changed after the delta", wantDiff: "xattr user.late", mutate: func(t *testing.T, src, _ string) {
			mustDo(t, unix.Setxattr(filepath.Join(src, "image/layers/a/etc/passwd"), "user.late", []byte("1"), 0))
		}},
	}
	srcs, dsts := treePairs(t, len(tests))
	copied := time.Now()
	for i := range tests {
		if _, err := Copy(ctx, srcs[i], dsts[i], Options{Delete: true}); err != nil {
			t.Fatal(err)
		}
	}
	agePastSlack() // as the preverify step waits after its catch-up pass
	verified := time.Now()
	for i := range tests {
		if _, err := Verify(ctx, srcs[i], dsts[i], VerifyOptions{Live: true, CopiedSince: copied, Checksums: true}); err != nil {
			t.Fatal(err)
		}
		// The runtime runs on, then stops; the delta pass copies what changed.
		src := srcs[i]
		mustDo(t, os.WriteFile(filepath.Join(src, "containers/c1/new"), []byte("x"), 0o644),
			os.Remove(filepath.Join(src, "image/dangling")),
			os.Chmod(filepath.Join(src, "ro"), 0o555))
		if _, err := Copy(ctx, src, dsts[i], Options{Since: copied, Delete: true}); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.mutate != nil {
				tc.mutate(t, srcs[i], dsts[i])
			}
			st, err := Verify(ctx, srcs[i], dsts[i], VerifyOptions{CopiedSince: copied, VerifiedSince: verified, Checksums: tc.checksums})
			if tc.wantDiff == "" && err != nil {
				t.Fatalf("verification after the stop: %v", err)
			}
			if tc.wantDiff != "" && (!errors.Is(err, ErrTreesDiffer) || !strings.Contains(err.Error(), tc.wantDiff)) {
				t.Fatalf("verification after the stop: %v, want a difference mentioning %q", err, tc.wantDiff)
			}
			// Most entries by status alone; the changed ones (the new file, the two
			// directories whose listing changed, the chmodded one) and their kin in full.
			if st.StatOnly == 0 || st.Entries-st.StatOnly < 4 {
				t.Errorf("stats %+v: want most entries compared by status and the changed ones in full", st)
			}
			full, err := Verify(ctx, srcs[i], dsts[i], VerifyOptions{Checksums: tc.checksums})
			if (err == nil) != (tc.wantDiff == "") {
				t.Errorf("a full verification disagrees: %v", err)
			}
			if err == nil && full.Entries != st.Entries {
				t.Errorf("entries: %d after the live pass, %d in a full verification", st.Entries, full.Entries)
			}
		})
	}
}

// TestTimeMarkUsable: ctimes are compared with a mark only on the same boot and while the
// wall clock has not gone back since.
func TestTimeMarkUsable(t *testing.T) {
	now := MarkNow()
	tests := []struct {
		name string
		mark TimeMark
		want bool
		why  string
	}{
		{"now", now, true, ""},
		{"none", TimeMark{}, false, "no mark"},
		{"another boot", TimeMark{Wall: now.Wall, Boot: now.Boot, BootID: "x"}, false, "rebooted"},
		{"clock set forward since", TimeMark{Wall: now.Wall.Add(-time.Hour), Boot: now.Boot, BootID: now.BootID}, true, ""},
		{"clock set back since", TimeMark{Wall: now.Wall.Add(5 * time.Second), Boot: now.Boot, BootID: now.BootID}, false, "went back"},
		{"clock slewed a little", TimeMark{Wall: now.Wall.Add(100 * time.Millisecond), Boot: now.Boot, BootID: now.BootID}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := tc.mark.Usable()
			if ok != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("usable() = %t, %q; want %t, %q", ok, why, tc.want, tc.why)
			}
		})
	}
}
