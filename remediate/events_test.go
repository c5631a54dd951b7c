package remediate

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
	"github.com/evictguard/evictguard/journal"
)

// TestEventReporterDeliver: an Event the API server refuses a time or two is still created;
// one it keeps refusing is an error, so the caller does not record the outcome as reported.
func TestEventReporterDeliver(t *testing.T) {
	defer func(d time.Duration) { eventRetry = d }(eventRetry)
	eventRetry = 10 * time.Millisecond
	for _, tc := range []struct {
		name     string
		failures int
		wantErr  bool
	}{
		{"at once", 0, false},
		{"after two refusals", 2, false},
		{"never", 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			calls := 0
			client.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
				calls++
				if calls <= tc.failures {
					return true, nil, errors.New("connection refused")
				}
				return false, nil, nil
			})
			r := EventReporter{Client: kubetest.New(client), Node: "n1"}
			err := r.Deliver(context.Background(), journal.Report{Op: "op1", Action: journal.KindMigrateDataRoot, Result: journal.ResultApplied})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Deliver = %v, want error %v", err, tc.wantErr)
			}
			l, _ := client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
			if created := len(l.Items); created != map[bool]int{false: 1, true: 0}[tc.wantErr] {
				t.Errorf("%d Events created after %d calls", created, calls)
			}
		})
	}
}
