//go:build !linux

package treecopy

import (
	"context"
	"errors"
	"io"
)

var errCopyUnsupported = errors.New("data-root migration is only supported on Linux")

// Copy is Linux-only.
func Copy(context.Context, string, string, Options) (Stats, error) {
	return Stats{}, errCopyUnsupported
}

// Verify is Linux-only.
func Verify(context.Context, string, string, VerifyOptions) (VerifyStats, error) {
	return VerifyStats{}, errCopyUnsupported
}

// DiskUsage is Linux-only.
func DiskUsage(context.Context, string) (Usage, error) { return Usage{}, errCopyUnsupported }

// DigestOptions tunes Digest.
type DigestOptions struct {
	Mtime bool
	Skip  func(rel string) bool
	Lines io.Writer
}

// Digest is Linux-only.
func Digest(context.Context, string, DigestOptions) (string, error) {
	return "", errCopyUnsupported
}

// SampleRate is Linux-only: it reports no rate.
func SampleRate(context.Context, string, string) float64 { return 0 }
