package monitor

import (
	"os"
	"syscall"
)

// allocated returns the bytes a file occupies on disk (st_blocks·512, what du counts and what
// fills the filesystem, unlike the size of a sparse file) and its st_dev.
func allocated(fi os.FileInfo) (int64, uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512, uint64(st.Dev) //nolint:unconvert // Dev is uint32 on some platforms
	}
	return fi.Size(), 0
}
