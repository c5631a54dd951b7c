// Package internal groups plumbing shared by the domain packages: host-root paths
// (internal/hostfs) and atomic, durable file writes (internal/atomicfile).
package internal
