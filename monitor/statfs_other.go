//go:build !linux

package monitor

import (
	"errors"
)

var errNotLinux = errors.New("monitor: statfs sampling is only implemented on Linux")

func statfsUsage(string) (Usage, error) { return Usage{}, errNotLinux }

func deviceOf(string) (uint64, error) { return 0, errNotLinux }

func devMajorMinor(dev uint64) (uint32, uint32) { return uint32(dev >> 8), uint32(dev & 0xff) }
