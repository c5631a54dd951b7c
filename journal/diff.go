package journal

import (
	udiff "github.com/aymanbagabas/go-udiff"
)

// UnifiedDiff renders the exact change a dry run would make to a file, in unified format
// (go-udiff, the diff algorithm of gopls). before is nil for a file that does not exist yet.
func UnifiedDiff(nodePath string, before, after []byte) string {
	from := "a" + nodePath
	if before == nil {
		from = "/dev/null"
	}
	return udiff.Unified(from, "b"+nodePath, string(before), string(after))
}
