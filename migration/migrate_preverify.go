package migration

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/treecopy"
)

// preverify runs while the runtime still runs, so that the stopped window has less to do.
// A catch-up pass copies what changed during the pre-copy (on a large root, minutes of
// container logs and layer writes); then, once every write of the passes is older than
// CtimeSlack, a live verification compares the copy with the source in full. After the stop
// only entries changed since the catch-up began are copied and compared in full; the rest
// is compared by status. A difference in an entry that did not change while it was copied is
// a fault of the copy: the step fails and the migration rolls back before anything stopped.
func (m *migration) preverify(ctx context.Context) (string, error) {
	o, s := &m.o, m.s
	s.Catchup, s.Preverify = nil, nil // a resumed step starts over
	r, err := preverifyPasses(ctx, m.host(s.Plan.From), m.host(s.Plan.To), s.Precopied, o.Checksums, o.Progress("catch-up"), o.Log)
	if err != nil {
		return "", err
	}
	s.CaughtUp, s.Preverified, s.Catchup, s.Preverify = r.CaughtUp, r.Preverified, &r.Catchup, &r.Verify
	// Write the bulk to the disk while the runtime still runs: the sync before the config step
	// (inside the downtime) then has only the delta left to write.
	syncStart := time.Now()
	if err := syncFilesystem(m.host(s.Plan.To)); err != nil {
		return "", err
	}
	cs, vs := r.Catchup, r.Verify
	return fmt.Sprintf("catch-up: %d file(s), %s, %d deleted in %s; verified while running: %d entries walked, no fault of the copy; %d changed since the catch-up began (compared after the stop) in %s; synced in %s",
		cs.Files, units.Bytes(cs.Bytes), cs.Deleted, cs.Duration.Round(time.Millisecond), vs.Entries, vs.Changed,
		r.VerifyDuration.Round(time.Millisecond), time.Since(syncStart).Round(time.Millisecond)), nil
}

// preverified is what preverifyPasses did.
type preverified struct {
	CaughtUp, Preverified treecopy.TimeMark // when the catch-up pass and the live verification began
	Catchup               treecopy.Stats
	Verify                treecopy.VerifyStats
	VerifyDuration        time.Duration
}

// preverifyPasses is the preverify step's work on from and to after a pre-copy that began
// at precopied (hack/bench-migrate.sh measures it too): the catch-up pass, the wait for its
// writes to age past CtimeSlack, and the live verification.
func preverifyPasses(ctx context.Context, from, to string, precopied treecopy.TimeMark, checksums bool, progress func(treecopy.Progress), log *slog.Logger) (preverified, error) {
	var r preverified
	since, why := passSince(precopied)
	if why != "" && log != nil {
		log.Warn("the catch-up pass compares every entry", "why", why)
	}
	r.CaughtUp = treecopy.MarkNow()
	cs, err := treecopy.Copy(ctx, from, to, treecopy.Options{Since: since, Delete: true, Progress: progress, Log: log})
	if err != nil {
		return r, fmt.Errorf("catch-up copy: %w", err)
	}
	r.Catchup = cs
	// The verification after the stop trusts copies whose ctime predates this one's start
	// by CtimeSlack: the passes' last writes must be that old when it starts. The runtime
	// still runs meanwhile: this costs no downtime.
	if err := sleepCtx(ctx, treecopy.CtimeSlack-time.Since(r.CaughtUp.Wall.Add(cs.Duration))); err != nil {
		return r, err
	}
	r.Preverified = treecopy.MarkNow()
	vs, err := treecopy.Verify(ctx, from, to, treecopy.VerifyOptions{Checksums: checksums, Live: true, CopiedSince: r.CaughtUp.Wall})
	r.Verify, r.VerifyDuration = vs, time.Since(r.Preverified.Wall)
	if err != nil {
		return r, fmt.Errorf("verification before the stop: %w", err)
	}
	return r, nil
}

// passSince is the Since of a copy pass after one that began at mark; zero (compare every
// entry's metadata) with the reason when ctimes cannot be trusted against it.
func passSince(mark treecopy.TimeMark) (time.Time, string) {
	if ok, why := mark.Usable(); !ok {
		return time.Time{}, why
	}
	return mark.Wall, ""
}

// deltaSince is what the delta pass after the stop may trust: entries unchanged since the
// catch-up began (or, if it did not finish, since the pre-copy began).
func (m *migration) deltaSince() (time.Time, string) {
	if m.s.Catchup != nil {
		return passSince(m.s.CaughtUp)
	}
	return passSince(m.s.Precopied)
}

// incrementalVerify sets vo to build on the verification before the stop; else it returns
// why the verification after the stop compares everything in full.
func (m *migration) incrementalVerify(vo *treecopy.VerifyOptions) string {
	s := m.s
	if s.Preverify == nil || s.Catchup == nil {
		return "no verification before the stop"
	}
	for _, mk := range []treecopy.TimeMark{s.CaughtUp, s.Preverified} {
		if ok, why := mk.Usable(); !ok {
			return why
		}
	}
	vo.CopiedSince, vo.VerifiedSince = s.CaughtUp.Wall, s.Preverified.Wall
	return ""
}

// sleepCtx sleeps d (nothing if d ≤ 0) unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
