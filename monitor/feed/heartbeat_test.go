package feed

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
	"github.com/evictguard/evictguard/monitor"
)

// TestHeartbeatIsOneRequest: after its first write a reporter keeps the condition itself, so
// a heartbeat of an unchanged condition is one request (the status patch), with the
// transition time kept; a change is one request too. What a node costs the API server in
// steady state is what a fleet of thousands costs it (issue #17's budget: ≤ 1 per minute).
func TestHeartbeatIsOneRequest(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-1"}})
	now := time.Unix(1700000000, 0)
	r, err := NewNodeReporter(NodeConfig{Client: kubetest.New(client), Node: "n1", Policy: Policy{For: -1},
		Now: func() time.Time { return now }, QPS: 1000, Heartbeat: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rate := 0.0
	snap := &monitor.Snapshot{Signals: []monitor.SignalStatus{{Signal: "nodefs.available", Kind: "hard", State: monitor.StateOK,
		Headroom: 10 << 30, Capacity: 100 << 30, FillRate: &rate}}}
	requests := func() []string {
		var out []string
		for _, a := range client.Actions() {
			if a.GetResource().Resource == "nodes" {
				out = append(out, a.GetVerb()+"/"+a.GetSubresource())
			}
		}
		client.ClearActions()
		return out
	}
	snap.Time = now
	if err := r.sync(ctx, snap); err != nil {
		t.Fatal(err)
	}
	t.Logf("first sync: %v", requests())
	first := now
	for i, tc := range []struct {
		after time.Duration
		want  int
	}{
		{time.Minute, 0},     // within the heartbeat: nothing
		{5 * time.Minute, 1}, // the heartbeat: one patch
		{10 * time.Minute, 1},
	} {
		now = first.Add(tc.after)
		snap.Time = now
		if err := r.sync(ctx, snap); err != nil {
			t.Fatal(err)
		}
		got := requests()
		if len(got) != tc.want || (tc.want == 1 && got[0] != "patch/status") {
			t.Errorf("sync %d (+%s): node requests %v, want %d status patch(es)", i, tc.after, got, tc.want)
		}
	}
	n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == ConditionType && (!c.LastTransitionTime.Time.Equal(first) || !c.LastHeartbeatTime.Time.Equal(now)) {
			t.Errorf("condition transition %s heartbeat %s, want %s and %s", c.LastTransitionTime, c.LastHeartbeatTime, first, now)
		}
	}
}

// TestRetryBackoff: after a failed sync the reporter waits a jittered, growing delay before
// the next one (2 s, doubling, at most a minute, each from [d, 2d)); a success resets it. A
// fleet whose API server comes back thus retries spread out instead of at its next sample.
func TestRetryBackoff(t *testing.T) {
	client := fake.NewClientset()
	r, err := NewNodeReporter(NodeConfig{Client: kubetest.New(client), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	if !r.due(now) {
		t.Fatal("a fresh reporter backs off")
	}
	lo := 2 * time.Second
	for i := range 8 {
		d := r.synced(now, errors.New("connection refused"))
		if d < lo || d >= 2*lo {
			t.Errorf("failure %d: retry after %s, want in [%s, %s)", i+1, d, lo, 2*lo)
		}
		if r.due(now.Add(d-time.Millisecond)) || !r.due(now.Add(d)) {
			t.Errorf("failure %d: due before %s or not after", i+1, d)
		}
		lo = min(2*lo, time.Minute)
	}
	r.synced(now, nil)
	if !r.due(now) {
		t.Error("a success does not reset the backoff")
	}
	if d := r.synced(now, errors.New("again")); d >= 4*time.Second {
		t.Errorf("after a success the first retry waits %s, want under 4 s", d)
	}
}
