// Package units formats sizes for people. Every byte count evictguard prints (status tables,
// plans, refusals, journal notes, progress) goes through Bytes, so that one size reads the
// same everywhere: binary units with a space, "1.5 GiB", as go-humanize's IBytes writes them.
// Machine-readable output (JSON, metrics, kubelet thresholds) keeps exact numbers or
// Kubernetes quantities instead.
//
// It reads and writes nothing on the host.
package units

import humanize "github.com/dustin/go-humanize"

// Bytes renders n in binary units ("512 B", "1.5 GiB", "15 GiB"); a negative n gets a minus
// sign.
func Bytes(n int64) string {
	if n < 0 {
		return "-" + humanize.IBytes(uint64(-n))
	}
	return humanize.IBytes(uint64(n))
}

// Rate renders bytes per second ("12 MiB/s").
func Rate(bytesPerSecond float64) string {
	return Bytes(int64(bytesPerSecond)) + "/s"
}
