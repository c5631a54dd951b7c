package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/evictguard/evictguard/treecopy"
	"github.com/evictguard/evictguard/treecopy/treecopytest"
)

// TestPreverifyFindsCopyFault: the preverify step's catch-up pass copies what changed during
// the pre-copy, and its live verification reports a fault of the copy while the runtime
// still runs.
func TestPreverifyFindsCopyFault(t *testing.T) {
	ctx := context.Background()
	srcs, dsts := treecopytest.TreePairs(t, 2, treecopy.CtimeSlack+100*time.Millisecond)
	for i, fault := range []bool{false, true} {
		t.Run(fmt.Sprintf("fault=%t", fault), func(t *testing.T) {
			precopied := treecopy.MarkNow()
			if _, err := treecopy.Copy(ctx, srcs[i], dsts[i], treecopy.Options{Delete: true}); err != nil {
				t.Fatal(err)
			}
			// The runtime writes during the pre-copy...
			must(t, os.WriteFile(filepath.Join(srcs[i], "containers/c1/during"), []byte("x"), 0o644))
			if fault { // ...and the copy of an unchanged file is wrong.
				must(t, os.Chmod(filepath.Join(dsts[i], "image/layers/a/etc/passwd"), 0o600))
			}
			start := time.Now()
			r, err := preverifyPasses(ctx, srcs[i], dsts[i], precopied, true, nil, nil)
			if fault {
				if !errors.Is(err, treecopy.ErrTreesDiffer) || !strings.Contains(err.Error(), "etc/passwd: mode") {
					t.Fatalf("preverify: %v, want the fault of the copy", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Catchup.Files != 1 {
				t.Errorf("catch-up copied %d files, want the one written during the pre-copy", r.Catchup.Files)
			}
			if r.Verify.Changed == 0 || r.Verify.Entries == 0 {
				t.Errorf("live verification %+v: want the catch-up's entries counted as changed", r.Verify)
			}
			// It waited for the catch-up's writes to age past the slack.
			if waited := r.Preverified.Wall.Sub(r.CaughtUp.Wall); waited < treecopy.CtimeSlack {
				t.Errorf("live verification began %s after the catch-up, want ≥ %s", waited, treecopy.CtimeSlack)
			}
			if time.Since(start) > time.Minute {
				t.Errorf("preverify took %s", time.Since(start))
			}
		})
	}
}

func must(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
