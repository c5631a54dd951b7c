package feed

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
	"github.com/evictguard/evictguard/monitor"
)

func secs(v float64) *float64 { return &v }

func snapWith(tt *float64, state monitor.State) *monitor.Snapshot {
	return &monitor.Snapshot{Signals: []monitor.SignalStatus{{
		Signal: "nodefs.available", Kind: "hard", Threshold: "10%", State: state, SecondsToThreshold: tt,
	}}}
}

func TestTracker(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	type step struct {
		at    time.Duration
		tt    *float64
		state monitor.State
		want  []string // keys of firing alerts
		// reload, when set, replaces the policy before this step (SetPolicy).
		reload *Policy
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"for: 1m before firing, hysteresis to 1.5h, resolve when no longer consumed", []step{
			{0, secs(3000), monitor.StateWarning, nil, nil},
			{30 * time.Second, secs(3000), monitor.StateWarning, nil, nil},
			{60 * time.Second, secs(3000), monitor.StateWarning, []string{"EvictionImminent/warning/nodefs.available/hard"}, nil},
			{90 * time.Second, secs(5000), monitor.StateWarning, []string{"EvictionImminent/warning/nodefs.available/hard"}, nil},
			{120 * time.Second, secs(5500), monitor.StateOK, nil, nil},
		}},
		{"a dip shorter than for: does not fire", []step{
			{0, secs(3000), monitor.StateWarning, nil, nil},
			{30 * time.Second, nil, monitor.StateOK, nil, nil},
			{60 * time.Second, secs(3000), monitor.StateWarning, nil, nil},
		}},
		{"a reload to a shorter horizon resolves a firing alert", []step{
			{0, secs(3000), monitor.StateWarning, nil, nil},
			{60 * time.Second, secs(3000), monitor.StateWarning, []string{"EvictionImminent/warning/nodefs.available/hard"}, nil},
			// 3000 s > 1.5 × 30 min: no longer imminent by the new horizon
			{70 * time.Second, secs(3000), monitor.StateWarning, nil, &Policy{WarningHorizon: 30 * time.Minute}},
		}},
		{"a reload to for: 0 fires a pending alert at once, keeping its start", []step{
			{0, secs(3000), monitor.StateWarning, nil, nil},
			{10 * time.Second, secs(3000), monitor.StateWarning, []string{"EvictionImminent/warning/nodefs.available/hard"}, &Policy{For: -1}},
		}},
		{"critical and warning together; breached replaces both at once", []step{
			{0, secs(100), monitor.StateWarning, nil, nil},
			{60 * time.Second, secs(40), monitor.StateWarning, []string{"EvictionImminent/critical/nodefs.available/hard", "EvictionImminent/warning/nodefs.available/hard"}, nil},
			{70 * time.Second, secs(0), monitor.StateBreached, []string{"EvictionThresholdBreached/critical/nodefs.available/hard"}, nil},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(Policy{}, "n1")
			for _, s := range tc.steps {
				if s.reload != nil {
					tr.SetPolicy(*s.reload)
				}
				var got []string
				for _, a := range tr.Update(t0.Add(s.at), snapWith(s.tt, s.state), nil) {
					got = append(got, a.Key())
					if s.reload != nil && s.reload.For < 0 && !a.Since.Equal(t0) {
						t.Errorf("at %s: %s starts at %s, want the condition's start %s", s.at, a.Key(), a.Since, t0)
					}
				}
				if strings.Join(got, ",") != strings.Join(s.want, ",") {
					t.Errorf("at %s: firing %v, want %v", s.at, got, s.want)
				}
			}
		})
	}
}

// fakeAM records posts; it fails the first `fail` of them.
type fakeAM struct {
	mu    sync.Mutex
	fail  int
	posts [][]amAlert
}

func (f *fakeAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/api/v2/alerts" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if f.fail > 0 {
		f.fail--
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	}
	var as []amAlert
	if err := json.NewDecoder(r.Body).Decode(&as); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.posts = append(f.posts, as)
}

func (f *fakeAM) last() []amAlert {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.posts) == 0 {
		return nil
	}
	return f.posts[len(f.posts)-1]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAlertmanagerFeed(t *testing.T) {
	am := &fakeAM{fail: 2}
	srv := httptest.NewServer(am)
	defer srv.Close()
	f, err := NewAlertmanager(AlertmanagerConfig{
		URLs: []string{srv.URL + "/"}, Node: "n1", GeneratorURL: "http://n1:9847/metrics",
		Policy: Policy{For: -1}, Resend: 200 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)

	f.Notify(snapWith(secs(1200), monitor.StateWarning))
	// Two failures, then delivered by the retries.
	waitFor(t, "the warning alert", func() bool { return len(am.last()) == 1 })
	a := am.last()[0]
	wantLabels := map[string]string{"alertname": "EvictionImminent", "severity": "warning", "node": "n1", "signal": "nodefs.available", "kind": "hard", "role": "nodefs"}
	for k, v := range wantLabels {
		if a.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, a.Labels[k], v)
		}
	}
	if !a.EndsAt.After(time.Now()) || a.GeneratorURL != "http://n1:9847/metrics" || !strings.HasSuffix(a.Annotations["runbook_url"], "docs/runbooks/EvictionImminent.md") {
		t.Errorf("alert = %+v", a)
	}
	// Re-sent while active.
	n := len(am.posts)
	waitFor(t, "a resend", func() bool { am.mu.Lock(); defer am.mu.Unlock(); return len(am.posts) > n })

	// Cleared: posted with endsAt in the past.
	f.Notify(snapWith(nil, monitor.StateOK))
	waitFor(t, "the resolution", func() bool {
		l := am.last()
		return len(l) == 1 && !l[0].EndsAt.After(time.Now())
	})
}

func TestNotifyNeverBlocks(t *testing.T) {
	f, err := NewAlertmanager(AlertmanagerConfig{URLs: []string{"http://127.0.0.1:1"}, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ { // nobody runs the feed
			f.Notify(snapWith(secs(10), monitor.StateWarning))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked")
	}
}

func TestNodeReporter(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-1"}})
	now := time.Unix(1700000000, 0)
	newReporter := func() *NodeReporter {
		r, err := NewNodeReporter(NodeConfig{Client: kubetest.New(client), Node: "n1", Policy: Policy{For: -1}, Now: func() time.Time { return now }, QPS: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	events := func() map[string]corev1.Event {
		l, err := client.CoreV1().Events(EventNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]corev1.Event{}
		for _, e := range l.Items {
			m[e.Reason+"/"+e.Name] = e
		}
		return m
	}
	condition := func() corev1.NodeCondition {
		n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == ConditionType {
				return c
			}
		}
		return corev1.NodeCondition{}
	}
	count := func(reason string) (n int, total int32) {
		for _, e := range events() {
			if e.Reason == reason {
				n++
				total += e.Count
			}
		}
		return n, total
	}

	r := newReporter()
	if err := r.sync(ctx, snapWith(secs(95), monitor.StateWarning)); err != nil {
		t.Fatal(err)
	}
	c := condition()
	if c.Status != corev1.ConditionTrue || c.Reason != ReasonEvictionImminent || !strings.Contains(c.Message, "nodefs.available (hard) reaches its eviction threshold in 1m35s, at 2023-11-14T22:14:55Z") {
		t.Errorf("condition = %+v", c)
	}
	if n, _ := count(ReasonEvictionImminent); n != 1 {
		t.Errorf("%d EvictionImminent events, want 1", n)
	}
	for _, e := range events() {
		if e.InvolvedObject.Kind != "Node" || e.InvolvedObject.Name != "n1" || e.InvolvedObject.UID != "uid-1" || e.Source.Component != Component {
			t.Errorf("event %s: involvedObject %+v source %+v", e.Name, e.InvolvedObject, e.Source)
		}
	}

	// Within the event interval: no repeat, even from a restarted daemon.
	now = now.Add(time.Minute)
	r = newReporter()
	if err := r.sync(ctx, snapWith(secs(35), monitor.StateWarning)); err != nil {
		t.Fatal(err)
	}
	if n, total := count(ReasonEvictionImminent); n != 1 || total != 1 {
		t.Errorf("after restart: %d EvictionImminent events, count %d; want 1, 1", n, total)
	}
	if n, total := count(ReasonEvictionThresholdsDiscovered); n != 1 || total != 1 {
		t.Errorf("after restart: %d EvictionThresholdsDiscovered events, count %d; want 1, 1", n, total)
	}
	// After the interval: the same Event, count 2.
	now = now.Add(5 * time.Minute)
	if err := r.sync(ctx, snapWith(secs(30), monitor.StateWarning)); err != nil {
		t.Fatal(err)
	}
	if n, total := count(ReasonEvictionImminent); n != 1 || total != 2 {
		t.Errorf("repeat: %d EvictionImminent events, count %d; want 1, 2", n, total)
	}
	// Cleared: condition False, keeps nothing firing, one "no longer" event.
	now = now.Add(time.Second)
	if err := r.sync(ctx, snapWith(nil, monitor.StateOK)); err != nil {
		t.Fatal(err)
	}
	if c := condition(); c.Status != corev1.ConditionFalse || c.Reason != ReasonNoEvictionPredicted {
		t.Errorf("cleared condition = %+v", c)
	}
	if n, _ := count(ReasonEvictionNoLongerImminent); n != 1 {
		t.Errorf("%d EvictionNoLongerImminent events, want 1", n)
	}
}

func TestEventName(t *testing.T) {
	a := EventName("n1", ReasonEvictionImminent, "nodefs.available/hard")
	if a != EventName("n1", ReasonEvictionImminent, "nodefs.available/hard") || a == EventName("n1", ReasonEvictionImminent, "imagefs.available/hard") {
		t.Error("event names are not deterministic per (reason, key)")
	}
	if long := EventName(strings.Repeat("x", 300), "R", "k"); len(long) > 253 {
		t.Errorf("name too long: %d", len(long))
	}
}

// TestNodeReporterKeepsConditionWhileWarming: a new daemon (an upgrade's new pod) finds the
// condition True on its Node; while its fill rates are unknown it leaves the condition alone
// instead of writing a false all-clear, and once it knows them it writes what it predicts.
func TestNodeReporterKeepsConditionWhileWarming(t *testing.T) {
	ctx := context.Background()
	trueCond := corev1.NodeCondition{Type: ConditionType, Status: corev1.ConditionTrue, Reason: ReasonEvictionImminent, Message: "nodefs.available (hard) reaches its eviction threshold in 5m0s"}
	tests := []struct {
		name        string
		existing    []corev1.NodeCondition
		rate        *float64
		toThreshold *float64
		want        corev1.ConditionStatus
	}{
		{name: "warming, True on the node: kept", existing: []corev1.NodeCondition{trueCond}, want: corev1.ConditionTrue},
		{name: "warm, nothing predicted: cleared", existing: []corev1.NodeCondition{trueCond}, rate: secs(0), want: corev1.ConditionFalse},
		{name: "warming, no condition on the node: False written", want: corev1.ConditionFalse},
		{name: "warm, predicted but pending for: kept", existing: []corev1.NodeCondition{trueCond}, rate: secs(1), toThreshold: secs(300), want: corev1.ConditionTrue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-1"}, Status: corev1.NodeStatus{Conditions: tc.existing}}
			client := fake.NewClientset(node)
			r, err := NewNodeReporter(NodeConfig{Client: kubetest.New(client), Node: "n1", Policy: Policy{For: time.Minute}, QPS: 1000})
			if err != nil {
				t.Fatal(err)
			}
			snap := &monitor.Snapshot{Signals: []monitor.SignalStatus{{Signal: "nodefs.available", Kind: "hard", Threshold: "10%", State: monitor.StateOK, FillRate: tc.rate, SecondsToThreshold: tc.toThreshold}}}
			if err := r.sync(ctx, snap); err != nil {
				t.Fatal(err)
			}
			n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got corev1.ConditionStatus
			for _, c := range n.Status.Conditions {
				if c.Type == ConditionType {
					got = c.Status
				}
			}
			if got != tc.want {
				t.Errorf("condition %q, want %q", got, tc.want)
			}
		})
	}
}
