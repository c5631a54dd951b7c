package harness

import (
	"os"
	"path/filepath"
	"testing"
)

// TestClaimHostPaths is the race CI hit: test A's pod creates a fixed path, test B starts
// while it exists, A ends first. The path must stay while B runs and go when B ends, and a
// path that existed before any claim must stay.
func TestClaimHostPaths(t *testing.T) {
	base := t.TempDir()
	// The run's real bookkeeping is shared with the e2e tests of other test binaries, whose
	// claims would keep the path; this test has its own.
	defer func(dir string, inUse func() int) { hostPathsDir, hostPathsInUse = dir, inUse }(hostPathsDir, hostPathsInUse)
	hostPathsDir, hostPathsInUse = filepath.Join(base, "hostpaths"), func() int { return 0 }
	created, machines := filepath.Join(base, "created-by-a-pod"), filepath.Join(base, "the-machines")
	if err := os.Mkdir(machines, 0o755); err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	aCreated, bClaimed, aReleased := make(chan struct{}), make(chan struct{}), make(chan struct{})
	t.Run("group", func(t *testing.T) {
		t.Run("A", func(t *testing.T) {
			t.Parallel()
			t.Cleanup(func() { close(aReleased) }) // runs after A's claim is released
			ClaimHostPaths(t, created, machines)
			if err := os.Mkdir(created, 0o755); err != nil {
				t.Fatal(err)
			}
			close(aCreated)
			<-bClaimed
		})
		t.Run("B", func(t *testing.T) {
			t.Parallel()
			<-aCreated
			ClaimHostPaths(t, created, machines)
			close(bClaimed)
			<-aReleased
			if !exists(created) {
				t.Error("A's end removed the path while B still holds a claim")
			}
		})
	})
	if exists(created) {
		t.Error("the created path outlived every claim")
	}
	if !exists(machines) {
		t.Error("a path that existed before any claim was removed")
	}
}
