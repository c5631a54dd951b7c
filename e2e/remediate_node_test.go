package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/e2e/harness"
)

// TestRemediateNodeReadyAndEvents registers kubelet.service with a real kube-apiserver and
// runs `evictguard apply --kubeconfig … --node-name …`: the change is verified including the
// Node being Ready as reported by the restarted kubelet, and recorded as a Normal Event on the
// Node; a change the kubelet rejects is rolled back, verified Ready on the old values, and
// recorded as a Warning Event.
func TestRemediateNodeReadyAndEvents(t *testing.T) {
	start := time.Now()
	api := harness.StartAPIServer(t)
	n := startNodeWith(t, layoutKubeadm17, testPolicy, nodeOptions{API: api})
	waitNodeReady(t, api, n.NodeName, time.Now().Add(-time.Hour))
	n.fillTo(t, 0.085)
	time.Sleep(2 * time.Second) // minKubeletUptime
	kube := []string{"--kubeconfig", api.Kubeconfig, "--node-name", n.NodeName}

	t.Run("rollback", func(t *testing.T) {
		from := time.Now()
		out, errOut, code := n.apply(t, []string{"EVICTGUARD_TEST_INJECT_THRESHOLD=nodefs.available<0"}, kube...)
		if code != 1 || !strings.Contains(errOut, "result=rolled-back") {
			t.Fatalf("apply: exit %d, want 1 and a rollback\n%s\n%s", code, out, tail(errOut, 4000))
		}
		n.assertConfigz(t, fiveDefaults)
		ev := waitNodeEvent(t, api, n.NodeName, "EvictionThresholdsRolledBack", from)
		if ev.Type != corev1.EventTypeWarning || ev.Source.Component != "evictguard" {
			t.Errorf("rollback Event: type %s, source %+v", ev.Type, ev.Source)
		}
		t.Logf("Event %s: %s", ev.Reason, ev.Message)
	})
	t.Run("applied", func(t *testing.T) {
		from := time.Now()
		out, errOut, code := n.apply(t, nil, kube...)
		if code != 0 {
			t.Fatalf("apply: exit %d\n%s\n%s", code, out, tail(errOut, 4000))
		}
		n.assertConfigz(t, lowered)
		// Ready, as reported by the kubelet started by this apply.
		waitNodeReady(t, api, n.NodeName, from)
		ev := waitNodeEvent(t, api, n.NodeName, "EvictionThresholdsChanged", from)
		if ev.Type != corev1.EventTypeNormal || !strings.Contains(ev.Message, "nodefs.available:5%") {
			t.Errorf("applied Event: type %s, message %q", ev.Type, ev.Message)
		}
		t.Logf("Event %s: %s", ev.Reason, ev.Message)
	})
	t.Logf("node ready and events: %s", time.Since(start).Round(time.Second))
}

// waitNodeReady waits until the Node is Ready with a heartbeat (or node Lease renewal) at or
// after since.
func waitNodeReady(t *testing.T, api *harness.APIServer, name string, since time.Time) {
	t.Helper()
	ctx := context.Background()
	since = since.Truncate(time.Second)
	err := harness.WaitFor(ctx, 120*time.Second, nil, func() error {
		node, err := api.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type != corev1.NodeReady {
				continue
			}
			if c.Status != corev1.ConditionTrue {
				return fmt.Errorf("Ready=%s: %s", c.Status, c.Message)
			}
			if !c.LastHeartbeatTime.Time.Before(since) {
				return nil
			}
			l, err := api.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
			if err == nil && l.Spec.RenewTime != nil && !l.Spec.RenewTime.Time.Before(since) {
				return nil
			}
			return fmt.Errorf("Ready last reported %s, before %s", c.LastHeartbeatTime, since)
		}
		return errors.New("no Ready condition yet")
	})
	if err != nil {
		t.Fatalf("node %s not Ready: %v", name, err)
	}
}

// waitNodeEvent returns the newest Event with reason on the Node created at or after since.
func waitNodeEvent(t *testing.T, api *harness.APIServer, node, reason string, since time.Time) corev1.Event {
	t.Helper()
	ctx := context.Background()
	var found *corev1.Event
	err := harness.WaitFor(ctx, 30*time.Second, nil, func() error {
		evs, err := api.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for i, e := range evs.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Reason == reason && !e.LastTimestamp.Time.Before(since.Truncate(time.Second)) {
				found = &evs.Items[i]
			}
		}
		if found == nil {
			return fmt.Errorf("no %s Event on Node %s among %d", reason, node, len(evs.Items))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return *found
}
