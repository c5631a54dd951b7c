package reclaim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Ballast is a preallocated reserve file on nodefs: space held back in good times and
// released in one unlink when the filesystem nears its eviction threshold, buying the time
// it takes the rest of the ladder (or an operator) to act.
type Ballast struct {
	// Path is the file as this process sees it (e.g. /host/var/lib/evictguard/ballast).
	Path string
	// Size is the reserve in bytes.
	Size int64
	// RecreateAbove is the headroom (bytes above the threshold) the filesystem must have
	// before the ballast is re-created; it must exceed Size so that re-creating it cannot
	// itself bring the filesystem back under the release level (hysteresis). Default
	// 2·Size.
	RecreateAbove int64
}

// BallastState is what is on disk.
type BallastState struct {
	Present bool
	// Allocated is st_blocks·512: what releasing it would give back.
	Allocated int64
}

// State stats the ballast file.
func (b *Ballast) State() (BallastState, error) {
	st, err := os.Lstat(b.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return BallastState{}, nil
	}
	if err != nil {
		return BallastState{}, fmt.Errorf("ballast: %w", err)
	}
	if !st.Mode().IsRegular() {
		return BallastState{}, fmt.Errorf("ballast: %s is not a regular file", b.Path)
	}
	s := BallastState{Present: true, Allocated: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Allocated = sys.Blocks * 512
	}
	return s, nil
}

// recreateAbove returns the effective re-creation level.
func (b *Ballast) recreateAbove() int64 {
	if b.RecreateAbove > b.Size {
		return b.RecreateAbove
	}
	return 2 * b.Size
}

// ShouldCreate reports whether the ballast should be (re-)created at this headroom.
func (b *Ballast) ShouldCreate(st BallastState, headroom int64) bool {
	return b.Size > 0 && (!st.Present || st.Allocated < b.Size) && headroom >= b.recreateAbove()
}

// Create preallocates the file with fallocate (real blocks, not a sparse file), through a
// temporary name so a half-made ballast is never mistaken for a full one. On ENOSPC it
// leaves nothing behind.
func (b *Ballast) Create() error {
	if b.Size <= 0 {
		return errors.New("ballast: size must be positive")
	}
	if err := os.MkdirAll(filepath.Dir(b.Path), 0o755); err != nil {
		return fmt.Errorf("ballast: %w", err)
	}
	tmp := b.Path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("ballast: %w", err)
	}
	if err := preallocate(f, b.Size); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("ballast: preallocate %d bytes at %s: %w", b.Size, tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ballast: %w", err)
	}
	if err := os.Rename(tmp, b.Path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ballast: %w", err)
	}
	return nil
}

// Release removes the ballast and returns the bytes it held (0 if there was none).
func (b *Ballast) Release() (int64, error) {
	st, err := b.State()
	if err != nil || !st.Present {
		return 0, err
	}
	if err := os.Remove(b.Path); err != nil {
		return 0, fmt.Errorf("ballast: release: %w", err)
	}
	os.Remove(b.Path + ".tmp")
	return st.Allocated, nil
}
