//go:build !linux

package treecopy

import (
	"errors"
	"time"
)

func bootClock() (time.Duration, string, error) {
	return 0, "", errors.New("no boot clock on this platform")
}
