package migration

import (
	"testing"
	"time"

	"github.com/evictguard/evictguard/treecopy"
)

func TestFormatProgress(t *testing.T) {
	tests := []struct {
		p    treecopy.Progress
		want string
	}{
		{treecopy.Progress{Bytes: 1 << 30, TotalBytes: 2 << 30, Elapsed: 2 * time.Second, Entries: 5}, "1.0 GiB / 2.0 GiB  512 MiB/s  5 entries  ETA 2s"},
		{treecopy.Progress{Bytes: 512, Elapsed: time.Second}, "512 B  512 B/s  0 entries"},
		{treecopy.Progress{Bytes: 512, TotalBytes: 512, Elapsed: time.Second, Done: true}, "512 B / 512 B  512 B/s  0 entries"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := formatProgress(tc.p); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
