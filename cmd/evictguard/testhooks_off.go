//go:build !evictguard_testhooks

package main

import "log/slog"

// noHooks: the shipped binary ignores every EVICTGUARD_TEST_* variable.
type noHooks struct{}

func buildHooks() testHooks { return noHooks{} }

func (noHooks) injectThreshold() string                  { return "" }
func (noHooks) afterStep(*slog.Logger) func(step string) { return nil }
func (noHooks) env() []string                            { return nil }
