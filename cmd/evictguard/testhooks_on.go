//go:build evictguard_testhooks

package main

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"
)

// The e2e suite's hooks, read from the environment of a binary built with
// -tags evictguard_testhooks:
//
//	EVICTGUARD_TEST_INJECT_THRESHOLD  "signal<value": written unvalidated in place of the plan's
//	EVICTGUARD_TEST_CRASH_AFTER       a step: SIGKILL evictguard right after it is journaled
//	EVICTGUARD_TEST_HOLD_AFTER        "step=FILE[,step=FILE…]": wait after the step until FILE exists
type envHooks struct{}

func buildHooks() testHooks { return envHooks{} }

func (envHooks) injectThreshold() string { return os.Getenv("EVICTGUARD_TEST_INJECT_THRESHOLD") }

func (envHooks) afterStep(log *slog.Logger) func(step string) {
	crash := os.Getenv("EVICTGUARD_TEST_CRASH_AFTER")
	holds := map[string]string{}
	for _, h := range strings.Split(os.Getenv("EVICTGUARD_TEST_HOLD_AFTER"), ",") {
		if step, file, ok := strings.Cut(h, "="); ok {
			holds[step] = file
		}
	}
	if crash == "" && len(holds) == 0 {
		return nil
	}
	return func(s string) {
		if file := holds[s]; file != "" {
			log.Warn("TEST HOOK: holding the operation", "step", s, "until", file)
			for {
				if _, err := os.Stat(file); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if s == crash {
			log.Warn("TEST HOOK: killing evictguard", "step", s)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

func (envHooks) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EVICTGUARD_TEST_") {
			env = append(env, kv)
		}
	}
	return env
}
