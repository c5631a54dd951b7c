//go:build !linux

package remediate

import (
	"context"
	"errors"
	"io"
)

var errCopyUnsupported = errors.New("data-root migration is only supported on Linux")

// CopyTree is Linux-only.
func CopyTree(context.Context, string, string, CopyOptions) (CopyStats, error) {
	return CopyStats{}, errCopyUnsupported
}

// VerifyTrees is Linux-only.
func VerifyTrees(context.Context, string, string, VerifyOptions) (VerifyStats, error) {
	return VerifyStats{}, errCopyUnsupported
}

// DiskUsage is Linux-only.
func DiskUsage(context.Context, string) (Usage, error) { return Usage{}, errCopyUnsupported }

// DigestOptions tunes TreeDigest.
type DigestOptions struct {
	Mtime bool
	Skip  func(rel string) bool
	Lines io.Writer
}

// TreeDigest is Linux-only.
func TreeDigest(context.Context, string, DigestOptions) (string, error) {
	return "", errCopyUnsupported
}
