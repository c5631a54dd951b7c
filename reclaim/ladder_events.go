package reclaim

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/journal"
)

// EventReasons maps a ladder step to its Node Event reason.
var EventReasons = map[string]string{
	StepBallast: "ReclaimBallast", StepGC: "ReclaimRuntimeGC", StepLogs: "ReclaimRotatedLogs",
	StepEscalate: "ReclaimEscalate", BallastRecreate: "BallastRecreated",
}

// EventReporter records each reclaim journal.Report as a core/v1 Event on the Node: type
// Normal when a step applied (the message carries the bytes reclaimed), Warning when it
// failed, was blocked, or escalated.
type EventReporter struct {
	Client kube.Interface
	Node   string
	Log    *slog.Logger
}

// journal.Report implements journal.Reporter.
func (r EventReporter) Report(ctx context.Context, rep journal.Report) {
	typ := corev1.EventTypeNormal
	if rep.Result == journal.ResultFailed || rep.Result == journal.ResultBlocked || rep.Action == StepEscalate {
		typ = corev1.EventTypeWarning
	}
	reason, ok := EventReasons[rep.Action]
	if !ok {
		reason = "Reclaim"
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: r.Node + ".evictguard.", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: r.Node, APIVersion: "v1"},
		Reason:         reason,
		Message:        strings.TrimSpace(fmt.Sprintf("%s: %s", rep.Result, rep.Reason)),
		Type:           typ,
		Source:         corev1.EventSource{Component: "evictguard", Host: r.Node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := r.Client.CreateEvent(ctx, ev); err != nil && r.Log != nil {
		r.Log.Warn("could not record a Node event", "node", r.Node, "err", err)
	}
}
