package migration

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/treecopy"
)

// formatProgress is one line of a running copy: bytes, rate, entries, ETA.
func formatProgress(p treecopy.Progress) string {
	s := units.Bytes(p.Bytes)
	if p.TotalBytes > 0 {
		s += " / " + units.Bytes(p.TotalBytes)
	}
	s += fmt.Sprintf("  %s/s  %d entries", units.Bytes(int64(p.Rate())), p.Entries)
	if eta := p.ETA(); eta >= 0 && !p.Done {
		s += "  ETA " + eta.Round(time.Second).String()
	}
	return s
}

// ProgressPrinter returns a treecopy.Options.Progress callback: on a terminal it redraws one line
// (bytes, rate, ETA); otherwise it logs a line per call.
func ProgressPrinter(w io.Writer, terminal bool, log *slog.Logger, what string) func(treecopy.Progress) {
	return func(p treecopy.Progress) {
		if terminal {
			end := ""
			if p.Done {
				end = "\n"
			}
			fmt.Fprintf(w, "\r\033[K%s: %s%s", what, formatProgress(p), end)
			return
		}
		if log != nil {
			log.Info("copy progress", "pass", what, "bytes", p.Bytes, "total_bytes", p.TotalBytes,
				"rate_bytes_per_second", int64(p.Rate()), "eta_seconds", p.ETA().Seconds(), "entries", p.Entries, "done", p.Done)
		}
	}
}
