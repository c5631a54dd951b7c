package reclaim

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Rotated-log reclaim modes.
const (
	LogModeCompress = "compress"
	LogModeTruncate = "truncate"
)

// RotatedLogs compresses (gzip) or truncates rotated container log files older than MinAge.
// It never touches an active file (docker's <id>-json.log, the kubelet's N.log) and, when
// position files are configured, never a file the shipper has not read to the end.
type RotatedLogs struct {
	// Dirs are searched recursively (as this process sees them): the runtime's container
	// dir (docker's containers/) and the kubelet's pod logs dir (/var/log/pods).
	Dirs []string
	// MinAge: only files last modified longer ago than this.
	MinAge time.Duration
	// Mode is LogModeCompress (default) or LogModeTruncate.
	Mode string
	// PosFiles are fluentd in_tail pos files (`path<TAB>inode hex<TAB>offset hex` per
	// line). When set, a rotated file is touched only if some pos file records its inode at
	// an offset equal to its size (shipped to the end); files absent from them are left.
	PosFiles []string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// LogCandidate is one rotated file the step would or did act on.
type LogCandidate struct {
	Path  string `json:"path"`
	Size  int64  `json:"size"`
	Bytes int64  `json:"bytes"` // bytes reclaimed (or predicted: the whole size)
}

// rotatedName matches rotated files: docker json-file "<id>-json.log.N", the kubelet's
// "N.log.YYYYMMDD-HHMMSS", logrotate's "x.log.N" — never already compressed ones.
var rotatedName = regexp.MustCompile(`\.log\.[0-9][0-9-]*$`)

// IsRotatedLog reports whether name is a rotated, uncompressed log file name.
func IsRotatedLog(name string) bool { return rotatedName.MatchString(name) }

// PosEntry is one line of a fluentd pos file.
type PosEntry struct {
	Path   string
	Inode  uint64
	Offset uint64
}

// ParsePosFile parses a fluentd in_tail pos file. Malformed lines are skipped.
func ParsePosFile(r io.Reader) ([]PosEntry, error) {
	var out []PosEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			continue
		}
		ino, err1 := strconv.ParseUint(f[1], 16, 64)
		off, err2 := strconv.ParseUint(f[2], 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, PosEntry{Path: f[0], Inode: ino, Offset: off})
	}
	return out, sc.Err()
}

// shipped returns, per inode, the largest offset recorded; ok=false when no pos files are
// configured (nothing to respect).
func (r *RotatedLogs) shipped() (map[uint64]uint64, bool, error) {
	if len(r.PosFiles) == 0 {
		return nil, false, nil
	}
	m := map[uint64]uint64{}
	for _, p := range r.PosFiles {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, true, fmt.Errorf("pos file: %w", err)
		}
		entries, err := ParsePosFile(f)
		f.Close()
		if err != nil {
			return nil, true, fmt.Errorf("pos file %s: %w", p, err)
		}
		for _, e := range entries {
			// fluentd writes ffffffffffffffff for an unwatched file: not proof of shipping.
			if e.Offset != ^uint64(0) && e.Offset > m[e.Inode] {
				m[e.Inode] = e.Offset
			}
		}
	}
	return m, true, nil
}

// Candidates lists the rotated files eligible now.
func (r *RotatedLogs) Candidates() ([]LogCandidate, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	shipped, respect, err := r.shipped()
	if err != nil {
		return nil, err
	}
	var out []LogCandidate
	for _, dir := range r.Dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() || !IsRotatedLog(d.Name()) {
				return nil
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil // rotated away meanwhile
			}
			if err != nil {
				return err
			}
			if now().Sub(info.ModTime()) < r.MinAge || info.Size() == 0 {
				return nil
			}
			if respect {
				st, ok := info.Sys().(*syscall.Stat_t)
				if !ok {
					return nil
				}
				off, seen := shipped[st.Ino]
				if !seen || off < uint64(info.Size()) {
					return nil
				}
			}
			out = append(out, LogCandidate{Path: p, Size: info.Size(), Bytes: info.Size()})
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("walk %s: %w", dir, err)
		}
	}
	return out, nil
}

// Reclaim acts on each candidate and returns what it did; Bytes is the size freed (for
// compression, the original size less the compressed one).
func (r *RotatedLogs) Reclaim(cands []LogCandidate) ([]LogCandidate, error) {
	var done []LogCandidate
	for _, c := range cands {
		var freed int64
		var err error
		if r.Mode == LogModeTruncate {
			err = os.Truncate(c.Path, 0)
			freed = c.Size
		} else {
			freed, err = gzipFile(c.Path)
		}
		if err != nil {
			return done, err
		}
		c.Bytes = freed
		done = append(done, c)
	}
	return done, nil
}

// gzipFile writes p.gz next to p (through a temporary name, synced), keeps p's mode and
// mtime, then removes p. It returns the bytes freed.
func gzipFile(p string) (int64, error) {
	src, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("compress: %w", err)
	}
	defer src.Close()
	info, err := src.Stat()
	if err != nil {
		return 0, fmt.Errorf("compress: %w", err)
	}
	tmp := p + ".gz.tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return 0, fmt.Errorf("compress: %w", err)
	}
	zw := gzip.NewWriter(dst)
	zw.Name, zw.ModTime = filepath.Base(p), info.ModTime()
	_, err = io.Copy(zw, src)
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("compress %s: %w", p, err)
	}
	zinfo, err := os.Stat(tmp)
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("compress: %w", err)
	}
	_ = os.Chtimes(tmp, info.ModTime(), info.ModTime())
	if err := os.Rename(tmp, p+".gz"); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("compress: %w", err)
	}
	if err := os.Remove(p); err != nil {
		return 0, fmt.Errorf("compress: %w", err)
	}
	return info.Size() - zinfo.Size(), nil
}
