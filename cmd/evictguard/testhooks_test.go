//go:build !evictguard_testhooks

package main

import (
	"log/slog"
	"testing"
)

// TestShippedBinaryHasNoTestHooks: built as shipped (without -tags evictguard_testhooks),
// no EVICTGUARD_TEST_* variable reaches an operation.
func TestShippedBinaryHasNoTestHooks(t *testing.T) {
	t.Setenv("EVICTGUARD_TEST_CRASH_AFTER", "write")
	t.Setenv("EVICTGUARD_TEST_HOLD_AFTER", "stop=/nonexistent")
	t.Setenv("EVICTGUARD_TEST_INJECT_THRESHOLD", "nodefs.available<0")
	h := buildHooks()
	if h.afterStep(slog.New(slog.DiscardHandler)) != nil || h.injectThreshold() != "" || len(h.env()) != 0 {
		t.Fatalf("the shipped binary acts on test hooks: %#v", h)
	}
}
