package main

import "log/slog"

// testHooks are the e2e suite's ways into a running operation, for its rollback and
// crash-safety proofs. The shipped binary has none (testhooks_off.go); a binary built with
// -tags evictguard_testhooks, as the e2e suite builds it, reads them from EVICTGUARD_TEST_*
// (testhooks_on.go), so that no variable in a node's environment can make a real evictguard
// kill itself or write a threshold the kubelet rejects.
type testHooks interface {
	// injectThreshold is "signal<value", written unvalidated in place of the plan's value of
	// that signal so that the kubelet refuses to start ("": none).
	injectThreshold() string
	// afterStep is called after each journaled step of an operation (nil: nothing to do): it
	// may hold the operation until a file exists, or SIGKILL evictguard.
	afterStep(log *slog.Logger) func(step string)
	// env is what a host unit that runs an operation must inherit for the hooks to reach it.
	env() []string
}

var hooks testHooks = buildHooks()
