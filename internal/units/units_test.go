package units

import "testing"

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1536, "1.5 KiB"},
		{3 << 29, "1.5 GiB"},
		{15 << 30, "15 GiB"},
		{-100 << 20, "-100 MiB"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := Bytes(tc.n); got != tc.want {
				t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
	if got := Rate(12 << 20); got != "12 MiB/s" {
		t.Errorf("Rate = %q", got)
	}
}
