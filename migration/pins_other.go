//go:build !linux

package migration

import (
	"errors"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// Pin is a mount that keeps part of a tree in use (Linux only).
type Pin struct{ Mountpoint, Why string }

// FindPins needs /proc/<pid>/mountinfo.
func FindPins(hostfs.Root, string) ([]Pin, error) {
	return nil, errors.New("mount namespaces are Linux-only")
}
