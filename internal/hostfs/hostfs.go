// Package hostfs maps absolute paths on the node to paths under a host root, so the same code
// runs against "/" on a node, "/host" in a DaemonSet and a fixture tree in tests. It reads and
// writes nothing itself.
package hostfs

import (
	"path/filepath"
	"strings"
)

// Root is the directory the node's "/" is visible at ("/" on the node itself).
type Root string

// Path returns the location of the node path p under the root. p is treated as absolute on
// the node whether or not it starts with a slash; ".." cannot climb above the root.
func (r Root) Path(p string) string {
	root := string(r)
	if root == "" {
		root = "/"
	}
	clean := filepath.Clean("/" + p)
	if root == "/" {
		return clean
	}
	return filepath.Join(root, clean)
}

// NodePath is the inverse of Path: it turns a path under the root back into the node's view.
// Paths outside the root are returned cleaned and unchanged.
func (r Root) NodePath(p string) string {
	root := filepath.Clean(string(r))
	if root == "/" || root == "." || root == "" {
		return filepath.Clean(p)
	}
	clean := filepath.Clean(p)
	if clean == root {
		return "/"
	}
	if rest, ok := strings.CutPrefix(clean, root+"/"); ok {
		return "/" + rest
	}
	return clean
}

// IsHost reports whether the root is the real "/".
func (r Root) IsHost() bool {
	return r == "" || filepath.Clean(string(r)) == "/"
}
