package journal

import (
	"context"
	"errors"
	"testing"
)

type countReporter struct{ n *int }

func (c countReporter) Report(context.Context, Report) { *c.n++ }

type failDeliverer struct {
	err error
	n   *int
}

func (f failDeliverer) Report(ctx context.Context, r Report) { _ = f.Deliver(ctx, r) }
func (f failDeliverer) Deliver(context.Context, Report) error {
	*f.n++
	return f.err
}

// TestMultiReporterDeliver: every reporter gets the report once; a Deliverer's error comes
// back (also from a nested MultiReporter), a plain reporter's cannot.
func TestMultiReporterDeliver(t *testing.T) {
	boom := errors.New("API server away")
	for _, tc := range []struct {
		name    string
		failing error
		want    error
	}{
		{"delivered", nil, nil},
		{"not delivered", boom, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var plain, deliveries int
			m := MultiReporter{countReporter{&plain}, nil, MultiReporter{failDeliverer{tc.failing, &deliveries}}}
			err := m.Deliver(context.Background(), Report{Op: "op1"})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("Deliver = %v, want %v", err, tc.want)
			}
			if plain != 1 || deliveries != 1 {
				t.Errorf("plain reporter %d times, deliverer %d times; want once each", plain, deliveries)
			}
		})
	}
}
