package monitor

// SetEval replaces the evaluation settings (warning horizon and margin, hysteresis) for the
// next Step, as a configuration reload does. Each signal's state and hysteresis and the
// predictors' fill-rate history are kept: only how the next observations are judged
// changes. Safe to call concurrently with Step (it waits for a running Step to finish).
func (m *Monitor) SetEval(cfg EvalConfig) {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	m.cfg.Eval = cfg
	m.eval.cfg = cfg.withDefaults()
}

// Eval returns the evaluation settings in effect, defaults applied.
func (m *Monitor) Eval() EvalConfig {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	return m.eval.cfg
}
