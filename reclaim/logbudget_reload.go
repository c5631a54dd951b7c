package reclaim

// SetFile changes where the budget env file and its snippets are written (a host path as
// this process sees it; "" stops writing them), as a configuration reload does. The next
// Update publishes whether or not the budgets changed materially, so the new file exists
// at once; the gauge and the last published budgets are otherwise kept.
func (p *BudgetPublisher) SetFile(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.File == path {
		return
	}
	p.cfg.File = path
	p.have = false
}

// File returns where the budget env file is written ("": nowhere).
func (p *BudgetPublisher) File() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.File
}
