package monitor

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"
)

// LogConfig bounds the cost of log accounting.
type LogConfig struct {
	// Budget is the most directory entries examined per Step across all log dirs
	// (default 4096), so a Step costs the same on a node with a million log files.
	Budget int
	// Refresh is the shortest time between the starts of two passes over a directory
	// (default 1m): sizes are refreshed at most this often.
	Refresh time.Duration
}

func (c LogConfig) withDefaults() LogConfig {
	if c.Budget <= 0 {
		c.Budget = 4096
	}
	if c.Refresh <= 0 {
		c.Refresh = time.Minute
	}
	return c
}

// logScanner measures the bytes allocated under one directory with a resumable walk: each
// step reads at most a given number of entries and carries on from there next time. It does
// not cross into other filesystems (like du -x) and does not follow symlinks.
type logScanner struct {
	root string // as this process sees it
	dev  uint64

	// walk in progress
	active    bool
	passStart time.Time
	stack     []string
	cur       *os.File
	bytes     int64
	files     int64

	// last completed pass
	done       bool
	lastBytes  int64
	lastFiles  int64
	lastFinish time.Time
	growth     *Predictor
}

func newLogScanner(root string, dev uint64) *logScanner {
	return &logScanner{
		root: root, dev: dev,
		growth: NewPredictor(PredictorConfig{MaxSamples: 16, Window: 24 * time.Hour, MinSamples: 3, MinSpan: time.Second}),
	}
}

// step spends up to budget entries; it returns the entries used.
func (s *logScanner) step(now time.Time, budget int, refresh time.Duration) int {
	if !s.active {
		if s.done && now.Sub(s.passStart) < refresh {
			return 0
		}
		s.active, s.passStart, s.stack, s.bytes, s.files = true, now, append(s.stack[:0], s.root), 0, 0
	}
	used := 0
	for used < budget {
		if s.cur == nil {
			if len(s.stack) == 0 {
				s.finish(now)
				return used
			}
			dir := s.stack[len(s.stack)-1]
			s.stack = s.stack[:len(s.stack)-1]
			f, err := os.Open(dir)
			used++
			if err != nil {
				continue // vanished (rotation) or unreadable: skip, the next pass will see
			}
			s.cur = f
		}
		ents, err := s.cur.ReadDir(min(budget-used, 256))
		for _, e := range ents {
			used++
			fi, ierr := e.Info()
			if ierr != nil {
				continue
			}
			alloc, dev := allocated(fi)
			if dev != s.dev && s.dev != 0 {
				continue
			}
			switch {
			case fi.IsDir():
				s.stack = append(s.stack, filepath.Join(s.cur.Name(), e.Name()))
			case fi.Mode().IsRegular():
				s.bytes += alloc
				s.files++
			}
		}
		if err != nil || len(ents) == 0 {
			if err != nil && !errors.Is(err, io.EOF) {
				used++ // count failed reads so a broken dir cannot spin
			}
			s.cur.Close()
			s.cur = nil
		}
	}
	return used
}

func (s *logScanner) finish(now time.Time) {
	s.active, s.done = false, true
	s.lastBytes, s.lastFiles, s.lastFinish = s.bytes, s.files, now
	// The growth predictor takes a free quantity; −bytes makes its consumption the growth.
	s.growth.Add(now, -float64(s.bytes))
}

func (s *logScanner) close() {
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
}

// logStats are the results of the last completed pass.
func (s *logScanner) stats() (bytes, files *int64, growth *float64, scanning bool) {
	if s.done {
		b, f := s.lastBytes, s.lastFiles
		bytes, files = &b, &f
		if r, ok := s.growth.Rate(); ok {
			growth = &r
		}
	}
	return bytes, files, growth, s.active
}
