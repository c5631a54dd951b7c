package main

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/evictguard/evictguard/internal/atomicfile"
	"github.com/evictguard/evictguard/internal/hostfs"
	"github.com/evictguard/evictguard/monitor"
)

// historyKeeper keeps the monitor's fill-rate history in a file on the node
// (--history-file, monitor.historyFile), so that a restarted or upgraded daemon predicts at
// its first sample: it restores the file at start, writes it (atomically) at most every
// historyEvery and when the daemon stops. A missing, unreadable or foreign file is logged and
// ignored: the history is an optimisation, never a reason not to run.
type historyKeeper struct {
	path   string // on this machine (under --host-root)
	node   string // as given, for logs
	m      *monitor.Monitor
	log    *slog.Logger
	last   time.Time
	warned bool
}

// historyEvery bounds the writes: the pods of a rolling update overlap for seconds, and a
// history older than the predictor's window is useless anyway.
const historyEvery = 10 * time.Second

func newHistoryKeeper(root hostfs.Root, nodePath string, m *monitor.Monitor, log *slog.Logger) *historyKeeper {
	if nodePath == "" {
		return nil
	}
	return &historyKeeper{path: root.Path(nodePath), node: nodePath, m: m, log: log.With("historyFile", nodePath)}
}

// restore loads the file into the monitor's predictors (before the first Step).
func (h *historyKeeper) restore(now time.Time) {
	if h == nil {
		return
	}
	b, err := os.ReadFile(h.path)
	if errors.Is(err, fs.ErrNotExist) {
		h.log.Info("no fill-rate history yet; predictions start after a few samples")
		return
	}
	if err == nil {
		var hist *monitor.History
		if hist, err = monitor.DecodeHistory(b); err == nil {
			n := h.m.RestoreHistory(hist, now)
			h.log.Info("fill-rate history restored", "predictors", n)
			return
		}
	}
	h.log.Warn("fill-rate history not used", "err", err)
}

// save writes the history when historyEvery has passed since the last write, or always
// when force is set (the daemon stops).
func (h *historyKeeper) save(now time.Time, force bool) {
	if h == nil || (!force && now.Sub(h.last) < historyEvery) {
		return
	}
	h.last = now
	b, err := h.m.History().Encode()
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(h.path), 0o755); err == nil {
			err = atomicfile.WriteFile(h.path, b, 0o644)
		}
	}
	switch {
	case err != nil && !h.warned:
		h.log.Warn("writing the fill-rate history failed; a restart will relearn the fill rates", "err", err)
		h.warned = true
	case err != nil:
		h.log.Debug("writing the fill-rate history failed", "err", err)
	case h.warned:
		h.log.Info("fill-rate history written again")
		h.warned = false
	}
}
