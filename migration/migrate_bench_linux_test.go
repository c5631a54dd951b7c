package migration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/evictguard/evictguard/treecopy"
)

// TestCopyBench is the copy engine's half of hack/bench-migrate.sh; it runs only when
// EVICTGUARD_BENCH_SRC (a tree to copy) and EVICTGUARD_BENCH_DST (an empty directory on
// another filesystem) are set. EVICTGUARD_BENCH_PASSES chooses what it does:
//
//	full:      a full copy into an empty target (the throughput compared with cp -a), left
//	           in DST/full for the caller to inspect or remove;
//	downtime:  a pre-copy into DST/pre (a full copy again, the denominator), the migration's
//	           preverify step (catch-up pass and live verification), then ~1 % of the
//	           source's files change (appends, new files, deletions, chmods) as under a
//	           running runtime, then the delta pass with deletions and the verification
//	           after the stop — what runs while the runtime is stopped;
//	(unset):   both.
//
// With EVICTGUARD_BENCH_SYNC=1 (real disks) every copy ends with syncfs of the target, as the
// migration's steps do: the full copy and the pre-copy are timed with it, the preverify step
// syncs outside the downtime, and the downtime includes the final sync.
//
// The downtime pass changes the source tree: the script runs it after the throughput rounds.
func TestCopyBench(t *testing.T) {
	src, dst := os.Getenv("EVICTGUARD_BENCH_SRC"), os.Getenv("EVICTGUARD_BENCH_DST")
	if src == "" || dst == "" {
		t.Skip("EVICTGUARD_BENCH_SRC and EVICTGUARD_BENCH_DST not set (hack/bench-migrate.sh sets them)")
	}
	ctx := context.Background()
	passes := os.Getenv("EVICTGUARD_BENCH_PASSES")
	if passes == "" || passes == "full" {
		full := filepath.Join(dst, "full")
		begin := time.Now()
		st, err := treecopy.Copy(ctx, src, full, treecopy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		benchSync(t, full)
		took := time.Since(begin)
		fmt.Printf("BENCH full_seconds=%.3f bytes=%d rate_mib_s=%.1f files=%d\n", took.Seconds(), st.Bytes, float64(st.Bytes)/took.Seconds()/(1<<20), st.Files)
		if passes == "full" {
			return
		}
		if err := os.RemoveAll(full); err != nil {
			t.Fatal(err)
		}
	}

	pre := filepath.Join(dst, "pre")
	precopied := treecopy.MarkNow()
	preStart := time.Now()
	if _, err := treecopy.Copy(ctx, src, pre, treecopy.Options{Delete: true}); err != nil {
		t.Fatal(err)
	}
	benchSync(t, pre)
	preTook := time.Since(preStart)
	// What the migration's preverify step does while the runtime still runs: the catch-up
	// pass, the wait for its writes to age past the ctime slack, the live verification.
	pv, err := preverifyPasses(ctx, src, pre, precopied, false, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	benchSync(t, pre)
	changed := churn(t, src, 0.01) // the runtime writes until it is stopped
	start := time.Now()
	dst2, err := treecopy.Copy(ctx, src, pre, treecopy.Options{Since: pv.CaughtUp.Wall, Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	deltaDone := time.Since(start)
	vs, err := treecopy.Verify(ctx, src, pre, treecopy.VerifyOptions{CopiedSince: pv.CaughtUp.Wall, VerifiedSince: pv.Preverified.Wall})
	if err != nil {
		t.Fatal(err)
	}
	benchSync(t, pre)
	down := time.Since(start)
	// A full verification of the same trees, for comparison (not part of the downtime).
	fstart := time.Now()
	if _, err := treecopy.Verify(ctx, src, pre, treecopy.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	full := time.Since(fstart)
	fmt.Printf("BENCH precopy_seconds=%.3f catchup_seconds=%.3f preverify_seconds=%.3f changed_entries=%d delta_files=%d delta_bytes=%d deleted=%d verified_full=%d verified_stat_only=%d full_verify_seconds=%.3f delta_seconds=%.3f verify_seconds=%.3f downtime_seconds=%.3f downtime_fraction=%.3f\n",
		preTook.Seconds(), pv.Catchup.Duration.Seconds(), pv.VerifyDuration.Seconds(), changed, dst2.Files, dst2.Bytes, dst2.Deleted,
		vs.Entries-vs.StatOnly, vs.StatOnly, full.Seconds(),
		deltaDone.Seconds(), (down - deltaDone).Seconds(), down.Seconds(), down.Seconds()/preTook.Seconds())
}

// benchSync writes dir's filesystem to its device when EVICTGUARD_BENCH_SYNC=1.
func benchSync(t *testing.T, dir string) {
	t.Helper()
	if os.Getenv("EVICTGUARD_BENCH_SYNC") != "1" {
		return
	}
	if err := syncFilesystem(dir); err != nil {
		t.Fatal(err)
	}
}

// churn changes about frac of the regular files under root as a running runtime would.
func churn(t *testing.T, root string, frac float64) int {
	t.Helper()
	var files []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	r := rand.New(rand.NewPCG(1, 2))
	n := 0
	for _, f := range files {
		if r.Float64() >= frac {
			continue
		}
		n++
		switch n % 4 {
		case 0:
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_WRONLY, 0)
			if err == nil {
				_, _ = fh.Write(make([]byte, 4096))
				fh.Close()
			}
		case 1:
			_ = os.WriteFile(f+".new", make([]byte, 8192), 0o644)
		case 2:
			_ = os.Remove(f)
		case 3:
			_ = os.Chmod(f, 0o600)
		}
	}
	return n
}
