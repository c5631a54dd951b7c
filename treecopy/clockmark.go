package treecopy

import (
	"fmt"
	"time"
)

// TimeMark is a moment as the wall clock saw it — the clock the kernel stamps ctimes from —
// together with the boot clock, which nobody sets. An incremental pass trusts that an entry
// whose ctime is older than a mark did not change since; that only holds if the wall clock
// was not set back in between (a later change would get an older stamp) and the node did
// not reboot (the boot clock restarts).
type TimeMark struct {
	Wall   time.Time     `json:"wall"`
	Boot   time.Duration `json:"boot"`
	BootID string        `json:"bootID"`
}

// MarkNow returns the current timeMark; without a boot clock (not Linux) it has no Boot and
// usable always says no.
func MarkNow() TimeMark {
	boot, id, _ := bootClock()
	return TimeMark{Wall: time.Now(), Boot: boot, BootID: id}
}

// maxClockSetBack is how far the wall clock may have gone back relative to the boot clock
// since a mark before ctimes stop being comparable with it: half of CtimeSlack, leaving the
// other half for the coarse clock's lag. NTP slews at most 500 µs/s, so a migration would
// have to take over 16 minutes for slewing alone to reach it — then it costs a full
// comparison, not a wrong one.
const maxClockSetBack = CtimeSlack / 2

// usable says whether ctimes can be compared with m.Wall now, and if not why.
func (m TimeMark) Usable() (bool, string) {
	if m.Wall.IsZero() {
		return false, "no mark recorded"
	}
	boot, id, err := bootClock()
	switch {
	case err != nil:
		return false, err.Error()
	case m.BootID == "" || id != m.BootID:
		return false, "the node rebooted since"
	}
	wall := time.Since(m.Wall.Round(0)) // wall-clock difference, not the monotonic reading
	if back := (boot - m.Boot) - wall; back > maxClockSetBack {
		return false, fmt.Sprintf("the wall clock went back %s since", back.Round(time.Millisecond))
	}
	return true, ""
}
