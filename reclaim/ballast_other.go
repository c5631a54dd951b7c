//go:build !linux

package reclaim

import (
	"errors"
	"os"
)

// preallocate is only implemented on Linux.
func preallocate(*os.File, int64) error {
	return errors.New("ballast: fallocate is only supported on Linux")
}
