//go:build !linux

package remediate

import (
	"errors"
	"time"
)

func bootClock() (time.Duration, string, error) {
	return 0, "", errors.New("no boot clock on this platform")
}
