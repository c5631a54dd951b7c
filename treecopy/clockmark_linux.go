package treecopy

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// bootClock reads CLOCK_BOOTTIME (counts suspend, never set) and the boot's ID.
func bootClock() (time.Duration, string, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, "", fmt.Errorf("boot clock: %w", err)
	}
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return 0, "", fmt.Errorf("boot id: %w", err)
	}
	return time.Duration(ts.Nano()), strings.TrimSpace(string(id)), nil
}
