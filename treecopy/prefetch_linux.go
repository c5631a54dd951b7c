package treecopy

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The copy walks one entry at a time, as cp -a does. On a block device with a cold page cache
// each step waits for the disk twice — the inode for the lstat, the data for the read — one
// request in flight at a time. A prefetch runs a bounded window ahead of the walk in each
// directory: a few goroutines lstat the next entries and ask the kernel to read the regular
// files' data ahead (posix_fadvise WILLNEED), so that the disk has a queue to work on and the
// walk finds inodes and data in the page cache. It issues no write and changes nothing; a
// failure only means the walk reads the entry itself. On tmpfs (everything already in memory)
// it is not started.

const (
	prefetchWindow  = 64 // entries ahead of the walk
	prefetchWorkers = 4
	// prefetchMax bounds the data asked for per file: the start of a large file, after which
	// the kernel's own sequential read-ahead takes over.
	prefetchMax = 4 << 20
)

type prefetcher struct {
	done     atomic.Int64 // index of the entry the walk is at
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// startPrefetch prefetches names (entries of the directory open as dirfd) ahead of the walk,
// which reports its position with at(i): their inodes, and with data their contents (a
// directory the pass copies in full; an incremental pass reads only what changed, so it
// prefetches inodes only). close must be called before dirfd is closed.
func startPrefetch(dirfd int, names []string, data bool) *prefetcher {
	p := &prefetcher{stop: make(chan struct{})}
	next := make(chan int)
	p.wg.Add(1)
	go func() { // feeder: hands out indices at most prefetchWindow ahead of the walk
		defer p.wg.Done()
		defer close(next)
		for i := range names {
			for int64(i) > p.done.Load()+prefetchWindow {
				select {
				case <-p.stop:
					return
				default:
				}
				// The walk is slow compared with this loop: yield until it moves on.
				waitBriefly()
			}
			select {
			case next <- i:
			case <-p.stop:
				return
			}
		}
	}()
	for range prefetchWorkers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for i := range next {
				var st unix.Stat_t
				if unix.Fstatat(dirfd, names[i], &st, unix.AT_SYMLINK_NOFOLLOW) != nil || !data || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 {
					continue
				}
				fd, err := unix.Openat(dirfd, names[i], unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
				if err != nil {
					continue
				}
				_ = unix.Fadvise(fd, 0, min(st.Size, prefetchMax), unix.FADV_WILLNEED)
				_ = unix.Close(fd)
			}
		}()
	}
	return p
}

func (p *prefetcher) at(i int) { p.done.Store(int64(i)) }

func (p *prefetcher) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	// Drain so that the feeder and workers see the end.
	p.wg.Wait()
}

func waitBriefly() { time.Sleep(200 * time.Microsecond) }
