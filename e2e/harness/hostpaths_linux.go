package harness

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// hostPathsDir keeps, across every test binary of a run, which of the machine's fixed paths
// the harness's components created (created/) and which tests still use them (users/).
// go test ./... runs packages in parallel and tests within a package run in parallel, so
// "remove it at cleanup if it did not exist at my start" is not enough: a test that starts
// while another one's kubelet or pod already created the path would see it as the machine's
// and leave it behind when it is the last one out (CI failed on exactly that).
var hostPathsDir = filepath.Join(BaseDir, "hostpaths")

var hostPathsSeq atomic.Int64

// hostPathsInUse counts processes that may still write the paths although no claim is held
// (a kubelet run by hand, or by a test that did not claim).
var hostPathsInUse = runningKubelets

// ClaimHostPaths records that the caller is about to run something that creates paths (fixed
// paths of the machine such as /var/lib/kubelet or a DaemonSet's hostPath) and removes, at its
// cleanup, those that did not exist before the first claim in force, once no other test in
// any test binary (a dead binary's claims are dropped) still holds a claim. Call it before
// starting the component, so that its cleanup runs after the component is gone.
func ClaimHostPaths(t testing.TB, paths ...string) {
	t.Helper()
	user := fmt.Sprintf("%d.%d", os.Getpid(), hostPathsSeq.Add(1))
	err := withHostPathsLock(func() error {
		for _, p := range paths {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				continue // the machine's, or already marked by a claim in force
			}
			if err := os.WriteFile(filepath.Join(hostPathsDir, "created", url.PathEscape(p)), []byte(p), 0o644); err != nil {
				return err
			}
		}
		return os.WriteFile(filepath.Join(hostPathsDir, "users", user), nil, 0o644)
	})
	if err != nil {
		t.Fatalf("claim host paths %v: %v", paths, err)
	}
	t.Cleanup(func() {
		var removed []string
		err := withHostPathsLock(func() error {
			if err := os.Remove(filepath.Join(hostPathsDir, "users", user)); err != nil {
				return err
			}
			users, err := os.ReadDir(filepath.Join(hostPathsDir, "users"))
			if err != nil {
				return err
			}
			live := 0
			for _, u := range users {
				pid, _ := strconv.Atoi(strings.SplitN(u.Name(), ".", 2)[0])
				if pid > 0 && unix.Kill(pid, 0) == nil {
					live++
					continue
				}
				_ = os.Remove(filepath.Join(hostPathsDir, "users", u.Name())) // a test binary that died
			}
			if live > 0 {
				return nil
			}
			if n := hostPathsInUse(); n > 0 {
				t.Logf("leaving the host paths the harness created: %d kubelet processes still running", n)
				return nil
			}
			marks, err := os.ReadDir(filepath.Join(hostPathsDir, "created"))
			if err != nil {
				return err
			}
			for _, m := range marks {
				mark := filepath.Join(hostPathsDir, "created", m.Name())
				p, err := os.ReadFile(mark)
				if err != nil {
					return err
				}
				if err := os.RemoveAll(string(p)); err != nil {
					return fmt.Errorf("remove host path %s: %w", p, err)
				}
				removed = append(removed, string(p))
				if err := os.Remove(mark); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("release host paths %v: %v", paths, err)
		} else if len(removed) > 0 {
			t.Logf("removed the host paths the harness created: %v", removed)
		}
	})
}

// withHostPathsLock runs f holding an exclusive flock on hostPathsDir's lock file, which
// every test binary of the run shares.
func withHostPathsLock(f func() error) error {
	for _, d := range []string{"created", "users"} {
		if err := os.MkdirAll(filepath.Join(hostPathsDir, d), 0o755); err != nil {
			return err
		}
	}
	lf, err := os.OpenFile(filepath.Join(hostPathsDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("flock %s: %w", lf.Name(), err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN) //nolint:errcheck // closing the file unlocks too
	return f()
}
