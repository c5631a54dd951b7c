package feed

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
	"github.com/evictguard/evictguard/monitor"
)

func TestNearestSignal(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 500, time.UTC)
	sig := func(name string, state monitor.State, headroom, capacity int64, seconds *float64) monitor.SignalStatus {
		return monitor.SignalStatus{Signal: name, Kind: "hard", State: state, Headroom: headroom, Capacity: capacity, SecondsToThreshold: seconds}
	}
	tests := []struct {
		name    string
		signals []monitor.SignalStatus
		want    string // the annotation, "" for none
	}{
		{"none", nil, ""},
		{"unknown only", []monitor.SignalStatus{{Signal: "nodefs.available", Kind: "hard", State: monitor.StateUnknown, Error: "statfs timed out"}}, ""},
		{"soonest prediction wins over least headroom", []monitor.SignalStatus{
			sig("nodefs.available", monitor.StateWarning, 1<<30, 100<<30, secs(3000)),
			sig("imagefs.available", monitor.StateWarning, 5<<30, 100<<30, secs(1199.6)),
			sig("memory.available", monitor.StateOK, 100<<20, 8<<30, nil),
		}, `{"signal":"imagefs.available","kind":"hard","state":"warning","headroom":5368709120,"unit":"bytes","percent":5,"seconds":1200,"time":"2026-12-06T12:00:00Z"}`},
		{"breached wins over a prediction", []monitor.SignalStatus{
			sig("nodefs.available", monitor.StateWarning, 1<<30, 100<<30, secs(60)),
			sig("imagefs.inodesFree", monitor.StateBreached, -10, 1000, nil),
		}, `{"signal":"imagefs.inodesFree","kind":"hard","state":"breached","headroom":-10,"unit":"inodes","percent":-1,"time":"2026-12-06T12:00:00Z"}`},
		{"no prediction: least headroom relative to capacity", []monitor.SignalStatus{
			sig("nodefs.available", monitor.StateOK, 10<<30, 100<<30, nil),
			sig("pid.available", monitor.StateOK, 3000, 32768, nil),
		}, `{"signal":"pid.available","kind":"hard","state":"ok","headroom":3000,"unit":"pids","percent":9.16,"time":"2026-12-06T12:00:00Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := NearestSignal(&monitor.Snapshot{Time: at, Signals: tt.signals})
			got := ""
			if ok {
				got = h.String()
			}
			if got != tt.want {
				t.Fatalf("annotation\n got %s\nwant %s", got, tt.want)
			}
			if !ok {
				return
			}
			back, err := ParseHeadroom(got)
			if err != nil || back.String() != got {
				t.Errorf("ParseHeadroom round trip: %+v, %v", back, err)
			}
		})
	}
}

func TestParseHeadroomErrors(t *testing.T) {
	for _, s := range []string{"", "nodefs", `{"kind":"hard"}`, `{"signal":1}`} {
		t.Run(s, func(t *testing.T) {
			if _, err := ParseHeadroom(s); err == nil || !strings.Contains(err.Error(), AnnotationHeadroom) {
				t.Errorf("ParseHeadroom(%q) = %v, want an error naming the annotation", s, err)
			}
		})
	}
}

// TestHeadroomAddsNoRequest: the annotation goes in the condition's status patch; the
// reporter's requests are the same as without it (a get and a status patch per write), and
// an unchanged condition within its heartbeat writes nothing, annotation included.
func TestHeadroomAddsNoRequest(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-1"}})
	now := time.Unix(1700000000, 0)
	r, err := NewNodeReporter(NodeConfig{Client: kubetest.New(client), Node: "n1", Policy: Policy{For: -1}, Now: func() time.Time { return now }, QPS: 1000})
	if err != nil {
		t.Fatal(err)
	}
	rate := 1.0
	snap := func(free int64) *monitor.Snapshot {
		return &monitor.Snapshot{Time: now, Signals: []monitor.SignalStatus{{Signal: "nodefs.available", Kind: "hard", State: monitor.StateOK,
			Headroom: free, Capacity: 100 << 30, FillRate: &rate}}}
	}
	nodeWrites := func() (patches, statusPatches int) {
		for _, a := range client.Actions() {
			if a.GetResource().Resource != "nodes" || a.GetVerb() != "patch" {
				continue
			}
			if a.GetSubresource() == "status" {
				statusPatches++
			} else {
				patches++
			}
		}
		return patches, statusPatches
	}
	if err := r.sync(ctx, snap(10<<30)); err != nil {
		t.Fatal(err)
	}
	if p, s := nodeWrites(); p != 0 || s != 1 {
		t.Fatalf("first sync: %d node patches, %d status patches; want 0, 1", p, s)
	}
	n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeadroom(n.Annotations[AnnotationHeadroom])
	if err != nil || h.Headroom != 10<<30 {
		t.Fatalf("annotation %q: %+v, %v", n.Annotations[AnnotationHeadroom], h, err)
	}
	// Within the heartbeat: the headroom changed, the condition did not, nothing is written.
	now = now.Add(time.Minute)
	if err := r.sync(ctx, snap(9<<30)); err != nil {
		t.Fatal(err)
	}
	if p, s := nodeWrites(); p != 0 || s != 1 {
		t.Fatalf("within the heartbeat: %d node patches, %d status patches; want 0, 1", p, s)
	}
	// At the heartbeat: one status patch with the new headroom.
	now = now.Add(5 * time.Minute)
	if err := r.sync(ctx, snap(8<<30)); err != nil {
		t.Fatal(err)
	}
	if p, s := nodeWrites(); p != 0 || s != 2 {
		t.Fatalf("heartbeat: %d node patches, %d status patches; want 0, 2", p, s)
	}
	n, _ = client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if h, _ := ParseHeadroom(n.Annotations[AnnotationHeadroom]); h.Headroom != 8<<30 {
		t.Errorf("after the heartbeat: %s", n.Annotations[AnnotationHeadroom])
	}
}
