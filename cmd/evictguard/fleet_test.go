package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/monitor/feed"
)

func fleetTestNode(name, status, reason, annotation string, heartbeat time.Time) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if annotation != "" {
		n.Annotations = map[string]string{feed.AnnotationHeadroom: annotation}
	}
	if status != "" {
		n.Status.Conditions = []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
			{Type: feed.ConditionType, Status: corev1.ConditionStatus(status), Reason: reason, LastHeartbeatTime: metav1.NewTime(heartbeat)},
		}
	}
	return n
}

func TestFleetRows(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	hb := now.Add(-90 * time.Second)
	nodes := []*corev1.Node{
		fleetTestNode("calm", "False", "NoEvictionPredicted", `{"signal":"nodefs.available","kind":"hard","state":"ok","headroom":10737418240,"unit":"bytes","percent":10,"time":"2026-12-06T11:58:30Z"}`, hb),
		fleetTestNode("soon", "True", "EvictionImminent", `{"signal":"imagefs.available","kind":"hard","state":"warning","headroom":5368709120,"unit":"bytes","percent":5,"seconds":1200,"time":"2026-12-06T11:58:30Z"}`, hb),
		fleetTestNode("later", "True", "EvictionImminent", `{"signal":"nodefs.inodesFree","kind":"hard","state":"warning","headroom":1000,"unit":"inodes","percent":0.1,"seconds":3000,"time":"2026-12-06T11:58:30Z"}`, hb),
		fleetTestNode("past", "True", "EvictionThresholdBreached", `{"signal":"nodefs.available","kind":"hard","state":"breached","headroom":-1048576,"unit":"bytes","percent":-0.01,"time":"2026-12-06T11:58:30Z"}`, hb),
		fleetTestNode("old", "False", "NoEvictionPredicted", "", hb),
		fleetTestNode("broken", "", "", "{not json", time.Time{}),
		fleetTestNode("plain", "", "", "", time.Time{}),
	}
	var rows []fleetNode
	for _, n := range nodes {
		rows = append(rows, fleetRow(n, now))
	}
	names := func() string {
		var s []string
		for _, r := range rows {
			s = append(s, r.Name)
		}
		return strings.Join(s, " ")
	}
	tests := []struct {
		sort, want string
	}{
		{"time", "past soon later calm broken old plain"},
		{"headroom", "past later soon calm broken old plain"},
	}
	for _, tt := range tests {
		t.Run("sort "+tt.sort, func(t *testing.T) {
			sortFleet(rows, tt.sort)
			if got := names(); got != tt.want {
				t.Errorf("order %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("table", func(t *testing.T) {
		sortFleet(rows, "time")
		var b bytes.Buffer
		if err := writeFleetTable(&b, rows); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"NODE CONDITION SIGNAL STATE HEADROOM TIME TO THRESHOLD HEARTBEAT",
			"past True EvictionThresholdBreached nodefs.available (hard) breached -1.0 MiB (-0.01%) past threshold 1m30s ago",
			"soon True EvictionImminent imagefs.available (hard) warning 5.0 GiB (5%) 20m0s 1m30s ago",
			"later True EvictionImminent nodefs.inodesFree (hard) warning 1000 inodes (0.1%) 50m0s 1m30s ago",
			"calm False NoEvictionPredicted nodefs.available (hard) ok 10 GiB (10%) - 1m30s ago",
			"broken - (unreadable annotation) -",
			"old False NoEvictionPredicted (no headroom annotation) 1m30s ago",
			"plain - (no evictguard data) -",
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if len(lines) != len(want) {
			t.Fatalf("table:\n%s", b.String())
		}
		for i, l := range lines {
			if got := strings.Join(strings.Fields(l), " "); got != want[i] {
				t.Errorf("line %d:\n got %q\nwant %q", i, got, want[i])
			}
		}
	})

	t.Run("fields", func(t *testing.T) {
		for _, r := range rows {
			switch r.Name {
			case "plain":
				if r.Evictguard || r.Nearest != nil || r.LastHeartbeat != nil {
					t.Errorf("plain: %+v", r)
				}
			case "broken":
				if !r.Evictguard || r.Error == "" || r.Nearest != nil {
					t.Errorf("broken: %+v", r)
				}
			case "soon":
				if r.HeartbeatAge != "1m30s" || r.Condition != "True" || r.Nearest == nil || *r.Nearest.Seconds != 1200 {
					t.Errorf("soon: %+v", r)
				}
			}
		}
	})
}

func TestFleetBadSort(t *testing.T) {
	var out, errb bytes.Buffer
	if code := execute(t.Context(), []string{"fleet", "--sort", "name"}, &out, &errb); code != exitUsage {
		t.Errorf("exit %d, want %d: %s", code, exitUsage, errb.String())
	}
}
