package treecopy

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
)

// The copy engine moves a container runtime's data root to another filesystem. It is written
// here rather than taken from a library because no maintained Go library preserves everything
// a runtime root holds at once: hard links (image layers share inodes), extended attributes
// including trusted.overlay.* (opaque directories, redirects), ownership, modes, nanosecond
// timestamps on directories and symlinks (utimensat with AT_SYMLINK_NOFOLLOW), sparse files
// (SEEK_DATA/SEEK_HOLE), device nodes, fifos and overlay whiteouts (character devices 0:0).
// Nor does any offer an incremental pass that also deletes, which a short downtime needs: the
// bulk is copied while the runtime runs and only the delta once it is stopped. The Linux
// parts are in copy_linux.go.

// Options tunes Copy.
type Options struct {
	// Since makes the pass incremental after a pass that began at Since: an entry whose status
	// has not changed since (ctime < Since) is left alone without a look at the destination,
	// and one that did change is copied again unless the destination has the same type, size,
	// mtime, mode and owner. Zero compares size, mtime, mode and owner of every entry.
	// Verify checks the result.
	Since time.Time
	// Delete removes destination entries that no longer exist at the source (a delta pass).
	Delete bool
	// Progress, if set, receives a snapshot every ProgressInterval (default 5s) and once at
	// the end.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// TotalBytes is the expected number of bytes to copy, for the ETA (0: unknown).
	TotalBytes int64
	Log        *slog.Logger
}

// Stats counts what a pass did.
type Stats struct {
	Files     int64 `json:"files"`     // regular files whose data was copied
	Unchanged int64 `json:"unchanged"` // entries an incremental pass left alone
	Dirs      int64 `json:"dirs"`
	Symlinks  int64 `json:"symlinks"`
	Specials  int64 `json:"specials"` // devices, fifos, sockets, whiteouts
	HardLinks int64 `json:"hardLinks"`
	Deleted   int64 `json:"deleted"`
	Bytes     int64 `json:"bytes"` // data bytes copied (holes excluded)
	Duration  time.Duration
}

// Rate is the pass's data rate in bytes per second.
func (s Stats) Rate() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Duration.Seconds()
}

// Progress is a point-in-time view of a running copy.
type Progress struct {
	Bytes, TotalBytes int64
	Entries           int64
	Elapsed           time.Duration
	Done              bool
}

// Rate is bytes per second so far.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Bytes) / p.Elapsed.Seconds()
}

// ETA is the expected remaining time, or -1 when unknown.
func (p Progress) ETA() time.Duration {
	r := p.Rate()
	if p.TotalBytes <= 0 || r <= 0 {
		return -1
	}
	left := p.TotalBytes - p.Bytes
	if left < 0 {
		left = 0
	}
	return time.Duration(float64(left) / r * float64(time.Second))
}

// progressTracker feeds Options.Progress from a ticker.
type progressTracker struct {
	bytes, entries atomic.Int64
	start          time.Time
	total          int64
	stop           chan struct{}
	done           chan struct{}
	fn             func(Progress)
}

func startProgress(ctx context.Context, opts Options) *progressTracker {
	p := &progressTracker{start: time.Now(), total: opts.TotalBytes, stop: make(chan struct{}), done: make(chan struct{}), fn: opts.Progress}
	if p.fn == nil {
		close(p.done)
		return p
	}
	iv := opts.ProgressInterval
	if iv <= 0 {
		iv = 5 * time.Second
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(iv)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.fn(p.snapshot(false))
			case <-p.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

func (p *progressTracker) snapshot(done bool) Progress {
	return Progress{Bytes: p.bytes.Load(), TotalBytes: p.total, Entries: p.entries.Load(), Elapsed: time.Since(p.start), Done: done}
}

func (p *progressTracker) finish() {
	close(p.stop)
	<-p.done
	if p.fn != nil {
		p.fn(p.snapshot(true))
	}
}

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Checksums compares file contents (SHA-256) in addition to metadata.
	Checksums bool
	// MaxDifferences stops after this many (default 20).
	MaxDifferences int

	// CopiedSince is when the last copy pass into dst began. A source entry whose status
	// changed since (ctime ≥ CopiedSince, less CtimeSlack) may differ from its copy for a good
	// reason while the source is in use: the next pass copies it again.
	CopiedSince time.Time
	// Live verifies while the source is still in use — before the runtime stops — so that
	// the downtime only has to verify what changed afterwards. Entries changed since
	// CopiedSince (and entries that vanish during the walk) are counted in
	// VerifyStats.Changed, not compared, and a directory changed since may list other
	// names; every other entry must be identical: a difference there is a fault of the copy,
	// found before anything is stopped.
	Live bool
	// VerifiedSince is when a Live verification that passed began (zero: there was none).
	// Then an entry changed on neither side since — source ctime before CopiedSince and copy
	// ctime before VerifiedSince, less CtimeSlack — has only its status compared (type,
	// mode, owner, size, mtime, device, link count and hard-link structure: the lstat of each
	// side) and is counted in VerifyStats.StatOnly: its xattrs, symlink target, directory
	// listing and contents were compared by the Live pass and none of them can change without
	// changing ctime. Every other entry is compared in full.
	VerifiedSince time.Time
}

// CtimeSlack is how much older than a time.Now() reading a ctime set after it can be: the
// kernel stamps inodes from its coarse clock, which lags by up to a few ticks (a few ms;
// more when a virtual CPU is descheduled). A second is far more than that, and costs
// nothing but a few entries compared again.
const CtimeSlack = time.Second

// ErrTreesDiffer is wrapped by Verify' error when the trees differ.
var ErrTreesDiffer = errors.New("trees differ")

// VerifyStats is what Verify compared.
type VerifyStats struct {
	Entries   int64 `json:"entries"`
	Files     int64 `json:"files"`
	Bytes     int64 `json:"bytes"`
	HardLinks int64 `json:"hardLinks"`
	Xattrs    int64 `json:"xattrs"`
	Checksums bool  `json:"checksums"`
	// Changed (Live) counts entries changed since the copy began, left for the final
	// verification.
	Changed int64 `json:"changed,omitempty"`
	// StatOnly (VerifiedSince) counts entries unchanged since the Live verification, whose
	// status alone was compared.
	StatOnly int64 `json:"statOnly,omitempty"`
}

// Usage is what a tree occupies.
type Usage struct {
	Bytes    int64 `json:"bytes"`    // allocated bytes (st_blocks·512), hard links counted once
	Apparent int64 `json:"apparent"` // sum of file sizes, hard links counted once
	Inodes   int64 `json:"inodes"`
}
