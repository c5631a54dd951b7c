//go:build !linux

package monitor

import "os"

func readProcFile(path string, _ *[]byte) ([]byte, error) { return os.ReadFile(path) }
