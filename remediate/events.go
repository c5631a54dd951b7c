package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

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

// Report implements journal.Reporter: Deliver, with a failure logged.
func (r EventReporter) Report(ctx context.Context, rep journal.Report) {
	if err := r.Deliver(ctx, rep); err != nil && r.Log != nil {
		r.Log.Warn("could not record a Node event", "node", r.Node, "err", err)
	}
}

// eventAttempts and eventRetry bound how long Deliver tries: an API server that is slow or
// briefly away (a rolling upgrade) must not lose the outcome of a migration, and a node
// without one must not hold up its remediation for long.
const eventAttempts = 3

// eventRetry is the first wait before trying again (then doubled, with jitter).
var eventRetry = time.Second

// Deliver implements journal.Deliverer: it creates the Event, trying again a few times (with
// jitter) when the API server does not take it.
func (r EventReporter) Deliver(ctx context.Context, rep journal.Report) error {
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
	backoff := wait.Backoff{Duration: eventRetry, Factor: 2, Jitter: 0.5, Steps: eventAttempts}
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		_, last = r.Client.CreateEvent(ctx, ev)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("event %s on node %s: %w", reason, r.Node, errors.Join(err, last))
	}
	return nil
}
