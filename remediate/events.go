package remediate

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/journal"
)

// EventReporter records each journal.Report as a core/v1 Event on the Node (reason
// EvictionThresholds<Result>, type Warning for rollbacks and failures).
type EventReporter struct {
	Client kube.Interface
	Node   string
	Log    *slog.Logger
}

// journal.Report implements journal.Reporter.
func (r EventReporter) Report(ctx context.Context, rep journal.Report) {
	typ := corev1.EventTypeNormal
	if rep.Result == journal.ResultRolledBack || rep.Result == journal.ResultFailed || rep.Result == journal.ResultBlocked {
		typ = corev1.EventTypeWarning
	}
	reason := map[string]string{journal.ResultApplied: "EvictionThresholdsChanged", journal.ResultRolledBack: "EvictionThresholdsRolledBack",
		journal.ResultFailed: "EvictionThresholdsRollbackFailed", journal.ResultBlocked: "EvictionThresholdsBlocked", journal.ResultRecovered: "EvictionThresholdsRecovered",
		journal.ResultDryRun: "EvictionThresholdsDryRun"}[rep.Result]
	if rep.Action == journal.KindMigrateDataRoot {
		reason = map[string]string{journal.ResultApplied: "DataRootMigrated", journal.ResultRolledBack: "DataRootMigrationRolledBack",
			journal.ResultFailed: "DataRootMigrationFailed", journal.ResultBlocked: "DataRootMigrationBlocked", journal.ResultRecovered: "DataRootMigrationRecovered",
			journal.ResultDryRun: "DataRootMigrationDryRun", journal.ResultTriggered: "DataRootMigrationTriggered"}[rep.Result]
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: r.Node + ".evictguard.", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: r.Node, UID: "", APIVersion: "v1"},
		Reason:         reason,
		Message:        fmt.Sprintf("%s (op %s): %s; old %v new %v", rep.Result, rep.Op, rep.Reason, rep.Old, rep.New),
		Type:           typ,
		Source:         corev1.EventSource{Component: "evictguard", Host: r.Node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := r.Client.CreateEvent(ctx, ev); err != nil && r.Log != nil {
		r.Log.Warn("could not record a Node event", "node", r.Node, "err", err)
	}
}
